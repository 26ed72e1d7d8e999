"""``fetalflex dataset``: labelled synthetic data sets at scale from one spec file.

``spec``: the spec (YAML or JSON), validated up front with errors naming its keys.
``plan``: spec -> the ordered items, each with an identity and a seed derived from the spec
alone (so a rerun, a resumed run and every shard agree on them).
``makers``: where an item is generated: the ``Maker`` protocol and the in-process maker
(the embedded backend); a running service's maker (gRPC) is ``service.dataset_remote``,
passed in by the ``fetalflex`` entry point (this package never imports the service).
``writer``: an item's files, written atomically, its record last.
``assemble``: the manifest, pairs index, summary and contact sheet, built from the item
records once every planned item has one; merging shard directories.
``runner``: the loop (resume, shards, progress), and ``cli`` its sub-commands.

Every image a data set holds is SYNTHETIC (phantom world) and marked so.
"""
