"""``fetalflex distill``: a few-step student of trained weights (``fetalflex.distill``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    p = sub.add_parser("distill", help="distill weights into a few-step student (guidance "
                                       "folded in: student-steps denoiser rows per image)")
    p.add_argument("--teacher", default=None,
                   help="the weights to distill (default: the shipped ones)")
    p.add_argument("--data", required=True,
                   help="manifest whose training layouts the teacher samples (phantoms, "
                        "imported real scans, or both)")
    p.add_argument("--out", required=True, help="run folder (resumed); weights: OUT/final")
    p.add_argument("--student-steps", type=int, default=4)
    p.add_argument("--substeps", type=int, default=5,
                   help="teacher DDIM steps per student step (guided: two rows each)")
    p.add_argument("--trajectories", type=int, default=2000,
                   help="teacher trajectories (the training set), made and cached in OUT in "
                        "shards of 640: raising it later reuses the shards already made")
    p.add_argument("--holdout", type=int, default=64,
                   help="teacher trajectories on the manifest's validation layouts (never "
                        "trained on): the student's x0 error on them is logged at every "
                        "checkpoint beside its error on as many training ones (0: none)")
    p.add_argument("--train-steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="stop training at this wall-clock budget (checkpointed; rerun resumes)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rollout", type=float, default=0.0, metavar="P",
                   help="fraction of training rows past the first student step that start "
                        "from the student's own free-running state (from the teacher's "
                        "noise) and learn to land where the teacher, asked in the loop, goes "
                        "from there (its guided substeps: 2 x substeps teacher rows per such "
                        "row): the student learns on the states it visits itself (0: "
                        "teacher-forced only)")
    p.add_argument("--init", type=Path, default=None, metavar="W",
                   help="start from these student weights (`distill` output of the same "
                        "--teacher, --student-steps and --substeps) instead of the teacher's")
    p.add_argument("--measure", nargs="+", type=Path, default=None, metavar="W",
                   help="no training: print (JSON) the x0 error per student step of these "
                        "students' weights on the run's held-out and training trajectories "
                        "(made first where not cached)")
    p.add_argument("--calibrate", type=Path, default=None, metavar="W",
                   help="no training: fit this student's tone curve (its grey levels onto the "
                        "teacher's, per appearance, on training trajectories only) and write "
                        "it with the curve to OUT/calibrated; a trained run calibrates "
                        "OUT/final the same way at its end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from fetalflex.backends.backends import load_backend, weights_dir
    from fetalflex.distill.calibrate import calibrate_student
    from fetalflex.distill.rollout import TeacherSegment
    from fetalflex.distill.student import (
        check_rollout,
        check_student,
        measure_students,
        train_student,
    )
    from fetalflex.distill.trajectories import (
        holdout_trajectories,
        make_trajectories,
        student_timesteps,
    )
    from fetalflex.generation import Engine

    deadline = (time.monotonic() + 60 * args.budget_minutes
                if args.budget_minutes is not None else None)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    teacher = weights_dir(Path(args.teacher) if args.teacher else None)
    engine = Engine(load_backend("embedded", teacher, threads=args.threads))
    out, data = Path(args.out), Path(args.data)
    check_rollout(args.rollout, args.student_steps, "--rollout")
    # refused before any trajectory is made (that can take an hour)
    grid = student_timesteps(engine, args.student_steps, args.substeps)
    if args.measure and args.calibrate:
        raise ValueError("--calibrate: one mode at a time; leave out --measure")
    if args.calibrate is not None:
        check_student(args.calibrate, engine.backend.model_hash, grid, engine.cfg.image_size,
                      set(), flag="--calibrate", substeps=args.substeps)
    if args.measure:
        if args.holdout <= 0:
            raise ValueError("--measure: needs held-out trajectories; pass --holdout N > 0")
        for w in args.measure:
            check_student(w, engine.backend.model_hash, grid, engine.cfg.image_size, set(),
                          substeps=args.substeps)
    if args.init is not None:
        check_student(args.init, engine.backend.model_hash, grid, engine.cfg.image_size, set(),
                      flag="--init", substeps=args.substeps)
    traj = make_trajectories(engine, data, args.trajectories, args.student_steps,
                             args.substeps, args.seed, log=lambda m: print(m, flush=True),
                             cache=out)
    if args.calibrate is not None:
        model, meta = check_student(args.calibrate, traj.teacher, traj.timesteps,
                                    engine.cfg.image_size, set(traj.appearances),
                                    flag="--calibrate", substeps=args.substeps)
        calibrate_student(model, meta, traj, out / "calibrated", seed=args.seed,
                          log=lambda m: print(m, flush=True))
        return 0
    held = holdout_trajectories(engine, data, args.holdout, args.student_steps, args.substeps,
                                args.seed, log=lambda m: print(m, flush=True), cache=out)
    if args.measure:
        if held is None:
            raise ValueError("--measure: --data has no validation records to hold out; "
                             "pass a manifest with a validation split")
        rows = measure_students(args.measure, traj, held, args.seed, args.substeps)
        print(json.dumps(rows, indent=1))
        return 0
    final = train_student(teacher, traj, out, args.train_steps, batch=args.batch_size,
                          lr=args.lr, seed=args.seed, deadline=deadline, holdout=held,
                          rollout=args.rollout, init=args.init, substeps=args.substeps,
                          teacher_segment=TeacherSegment(engine.backend.call, engine.cfg,
                                                         traj.guidance, args.substeps),
                          log=lambda m: print(m, flush=True))
    model, meta = check_student(final, traj.teacher, traj.timesteps, engine.cfg.image_size,
                                set(traj.appearances), flag="--out", substeps=args.substeps)
    calibrate_student(model, meta, traj, final, seed=args.seed,
                      log=lambda m: print(m, flush=True))
    print(f"student weights: {final} ({args.student_steps} denoiser rows per image by "
          f"default); measure it beside the teacher with `fetalflex evaluate --weights`")
    return 0
