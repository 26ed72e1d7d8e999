"""What the command lines (``fetalflex``, ``fetalflex dataset``, ``python -m bench``) share:
the ``--help`` format and the flags that reach a running service."""

from __future__ import annotations

import argparse
import copy


class HelpWithDefaults(argparse.HelpFormatter):
    """``--help`` names every option's default, also for options without a help text."""

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        return bool(action.option_strings) and action.default not in (
            None, False, argparse.SUPPRESS)

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._shows_default(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if self._shows_default(action) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def connection_args(p: argparse.ArgumentParser, token: bool) -> None:
    """How ``client``, ``load``, ``health`` and ``dataset`` reach a service
    (``service.client`` reads them)."""
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--ca", help="CA certificate (PEM) that signed the server's; turns TLS on")
    p.add_argument("--cert", help="client certificate (PEM) for servers that require mTLS")
    p.add_argument("--key", help="the client certificate's private key (PEM)")
    p.add_argument("--tls", action="store_true",
                   help="TLS with the system's root certificates (implied by --ca/--cert)")
    if token:
        p.add_argument("--token-file", help="file holding the bearer token")
