"""The ``hookstream`` command line (DESIGN.md §4).

Each sub-command parses its arguments and hands over to the module that does the work;
nothing here decides anything.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import aiohttp
import orjson
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from deploy import corpus
from deploy.broker import BrokerState, LocalBroker
from deploy.dev import local_secret, run_dev
from deploy.replay import replay
from deploy.send import installation_target, post, signed_delivery
from processors.triggers.rules import TriggerFile, load_trigger_file
from schemas.errors import HookstreamError
from schemas.logs import configure_logging
from schemas.settings import Settings

# Processors that can run as `hookstream worker NAME`; the others join as they land.
PROCESSORS = ("insights", "triggers", "checks", "identity")


def _kafka(args: argparse.Namespace, settings: Settings) -> int:
    broker = LocalBroker(settings)
    if args.action == "up":
        status = broker.up()
        if not broker.is_external:
            from schemas.topics import ensure_topics, topic_specs

            asyncio.run(ensure_topics(settings.kafka_bootstrap, topic_specs(settings)))
    elif args.action == "down":
        status = broker.down()
    else:
        status = broker.status()
    print(status)
    if args.action == "status":
        return 0 if status.state is not BrokerState.STOPPED else 3
    return 0


def _ingress(args: argparse.Namespace, settings: Settings) -> int:
    from ingress.app import MissingSecret
    from ingress.server import serve

    try:
        serve(settings)
    except MissingSecret as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def _send(args: argparse.Namespace, settings: Settings) -> int:
    if args.list:
        for example in corpus.load(settings.cache_dir):
            print(example.name)
        return 0
    if args.example:
        corpus.fetch(settings.cache_dir)
        example = corpus.find(settings.cache_dir, args.example)
        event, payload = args.event or example.event, example.body
    elif args.file:
        if not args.event:
            print("--event is required with a file (the X-GitHub-Event header)", file=sys.stderr)
            return 2
        event, payload = args.event, Path(args.file).read_bytes()
    else:
        print("give a payload FILE or --example NAME (see --list)", file=sys.stderr)
        return 2
    secret = args.secret.encode() if args.secret else local_secret(settings, create=False)
    if secret is None:
        print(
            "no secret: set HOOKSTREAM_WEBHOOK_SECRETS or pass --secret "
            "(`hookstream dev` generates one into the data dir)",
            file=sys.stderr,
        )
        return 2
    try:
        target = installation_target(orjson.loads(payload))
    except orjson.JSONDecodeError:
        target = None  # send it anyway: the ingress's answer is what the user wants to see
    delivery = signed_delivery(
        payload,
        event,
        secret,
        delivery_id=args.delivery,
        hook_id=args.hook_id,
        form=args.form,
        installation_target=target,
    )
    url = args.url or f"http://{settings.ingress_host}:{settings.ingress_port}/webhooks/github"
    try:
        status, text = asyncio.run(post(url, delivery))
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"hookstream: no answer from {url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"{status} {text}")
    return 0 if 200 <= status < 300 else 1


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    return run_dev(settings)


def _load_triggers(settings: Settings) -> TriggerFile:
    path = settings.triggers_path
    if path is None:
        logging.getLogger("hookstream.triggers").warning(
            "no trigger file (HOOKSTREAM_TRIGGERS_FILE, or ./triggers.yml): nothing will be "
            "dispatched"
        )
        return TriggerFile(workflows={})
    return load_trigger_file(path)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from deploy.worker import run_worker

    if args.processor == "insights":
        from processors.insights.app import create_app as insights_app

        run_worker(insights_app(settings), settings)
    elif args.processor == "identity":
        from processors.identity.app import create_app as identity_app

        run_worker(identity_app(settings), settings)
    elif args.processor == "checks":
        from processors.checks.app import create_app as checks_app
        from processors.checks.github import AppCredentials

        run_worker(checks_app(settings, AppCredentials.from_settings(settings)), settings)
    else:
        from processors.triggers.app import create_app as triggers_app

        run_worker(triggers_app(settings, _load_triggers(settings)), settings)
    return 0


def _sql(args: argparse.Namespace, settings: Settings) -> int:
    from projections.query import (
        QueryError,
        QueryServiceUnavailable,
        query_service,
        render,
        run_readonly,
    )
    from projections.sink import connect

    try:
        try:
            if not settings.embedded:
                raise QueryServiceUnavailable(settings.dsn)
            result = asyncio.run(query_service(settings.query_port, args.query))
        except QueryServiceUnavailable:
            # A server, or no worker owning the embedded path: open it directly.
            client = connect(settings.dsn)
            try:
                result = run_readonly(client, args.query)
            finally:
                client.close()
    except QueryError as exc:
        print(f"hookstream sql: {exc}", file=sys.stderr)
        return 1
    print(render(result, args.format))
    return 0


def _triggers(args: argparse.Namespace, settings: Settings) -> int:
    triggers = load_trigger_file(Path(args.file))
    workflows = triggers.workflows.values()
    print(
        f"{args.file}: ok: {len(triggers.workflows)} workflows, "
        f"{sum(len(w.on) for w in workflows)} triggers, "
        f"{sum(len(w.commands) for w in workflows)} commands, {len(triggers.targets)} targets"
    )
    return 0


def _identities_import(args: argparse.Namespace, settings: Settings) -> int:
    from deploy.identities import ImportRefused, load_links, publish_links
    from schemas.envelope import utc_now

    try:
        links = load_links(Path(args.file), utc_now())
    except ImportRefused as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        print(f"hookstream: nothing imported from {args.file}", file=sys.stderr)
        return 2
    asyncio.run(publish_links(settings, links))
    print(f"imported {len(links)} link{'' if len(links) == 1 else 's'} from {args.file}")
    return 0


def _identities_list(args: argparse.Namespace, settings: Settings) -> int:
    from deploy.identities import identity_table, read_inputs
    from projections.query import render

    print(render(identity_table(asyncio.run(read_inputs(settings))), args.format))
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    replay(settings, args.projection, dry_run=args.dry_run)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookstream",
        description="Event-sourced stream processor for GitHub webhooks.",
        epilog="Configuration comes from HOOKSTREAM_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = sub.add_parser("kafka", help="manage the local Kafka broker (KRaft, no Docker)")
    kafka.add_argument(
        "action",
        choices=("up", "down", "status"),
        help="up: start and wait until it answers; down: stop cleanly; status: tell the truth "
        "(exit 3 when stopped)",
    )
    kafka.set_defaults(func=_kafka)

    ingress = sub.add_parser("ingress", help="serve POST /webhooks/github and write github.events")
    ingress.set_defaults(func=_ingress)

    dev = sub.add_parser("dev", help="Kafka + ingress + all workers; Ctrl-C stops all")
    dev.set_defaults(func=_dev)

    send = sub.add_parser("send", help="sign and POST a delivery to a running ingress")
    send.add_argument("file", nargs="?", help="a JSON payload file (needs --event)")
    send.add_argument(
        "--example", metavar="NAME", help="a corpus example, e.g. pull_request.opened"
    )
    send.add_argument("--list", action="store_true", help="list the corpus examples and exit")
    send.add_argument("--event", help="the X-GitHub-Event header (default: the example's event)")
    send.add_argument("--delivery", metavar="GUID", help="reuse a delivery GUID (a redelivery)")
    send.add_argument("--hook-id", default="1", help="the X-GitHub-Hook-ID header (default: 1)")
    send.add_argument("--form", action="store_true", help="send form-encoded (payload=…)")
    send.add_argument("--secret", help="signing secret (default: the configured one)")
    send.add_argument("--url", help="ingress URL (default: from HOOKSTREAM_INGRESS_HOST/_PORT)")
    send.set_defaults(func=_send)

    worker = sub.add_parser("worker", help="run one processor (its own Faust app)")
    worker.add_argument("processor", choices=PROCESSORS)
    worker.set_defaults(func=_worker)

    sql = sub.add_parser("sql", help="run read-only SQL against the insight tables and views")
    sql.add_argument("query", help='e.g. "SELECT * FROM dora_lead_time"')
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.set_defaults(func=_sql)

    triggers = sub.add_parser("triggers", help="work with trigger files")
    triggers_sub = triggers.add_subparsers(dest="triggers_command", required=True)
    check = triggers_sub.add_parser("check", help="validate a trigger file; errors name the line")
    check.add_argument("file")
    check.set_defaults(func=_triggers)

    identities = sub.add_parser(
        "identities", help="link GitHub accounts to platform users, and see who is who"
    )
    identities_sub = identities.add_subparsers(dest="identities_command", required=True)
    import_parser = identities_sub.add_parser(
        "import",
        help="link the rows of a CSV file (columns platform_user,github_login,github_user_id,"
        "email,role); one bad row and nothing is imported",
    )
    import_parser.add_argument("file", metavar="FILE.csv")
    import_parser.set_defaults(func=_identities_import)
    list_parser = identities_sub.add_parser(
        "list", help="every known GitHub account with its platform user, roles and source"
    )
    list_parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    list_parser.set_defaults(func=_identities_list)

    replay_parser = sub.add_parser(
        "replay", help="rebuild a projection from the start of github.events (effects off)"
    )
    replay_parser.add_argument("projection", choices=PROCESSORS)
    replay_parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (topics, offsets, group, tables) only",
    )
    replay_parser.set_defaults(func=_replay)

    reconcile_parser = sub.add_parser(
        "reconcile",
        help="list the App's deliveries GitHub failed to bring to hookstream; --apply "
        "redelivers them",
    )
    reconcile_parser.add_argument(
        "--since", default="72h", metavar="DURATION",
        help="how far back to look, e.g. 6h, 90m, 2d (default and most: 72h, GitHub keeps 3 days)",
    )  # fmt: skip
    reconcile_parser.add_argument(
        "--apply", action="store_true", help="ask GitHub to redeliver them (default: a dry run)"
    )
    reconcile_parser.set_defaults(func=_reconcile)

    dlq = sub.add_parser("dlq", help="see the dead letters, and send them back after a fix")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser(
        "list", help="one line per dead letter: offset, age, processor, source, delivery, "
        "event, whether it was retried, error",
    )  # fmt: skip
    dlq_list.add_argument("topic", help="a dead-letter topic, e.g. github.events.dlq")
    dlq_list.add_argument("--format", choices=("table", "csv", "json"), default="table")
    dlq_show = dlq_sub.add_parser("show", help="one dead letter: every header, and its body")
    dlq_show.add_argument("topic")
    dlq_show.add_argument("offset", type=int)
    dlq_retry = dlq_sub.add_parser(
        "retry", help="send dead letters back through the processor that failed them, once"
    )
    dlq_retry.add_argument("topic")
    dlq_retry.add_argument(
        "--offset", type=int, action="append", default=[], metavar="N",
        help="this dead letter (repeatable); refused if it was retried already",
    )  # fmt: skip
    dlq_retry.add_argument("--all", action="store_true", help="every one not retried yet")
    dlq_retry.add_argument("--force", action="store_true", help="with --offset: even if retried")
    for command in (dlq_list, dlq_show, dlq_retry):
        command.set_defaults(func=_dlq)
    return parser


def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    from deploy import dlq

    try:
        if args.dlq_command == "list":
            out = asyncio.run(dlq.list_dead_letters(settings, args.topic, args.format))
        elif args.dlq_command == "show":
            out = asyncio.run(dlq.show_dead_letter(settings, args.topic, args.offset))
        else:
            out = asyncio.run(dlq.retry_dead_letters(
                settings, args.topic, args.offset, every=args.all, force=args.force
            ))  # fmt: skip
    except dlq.DlqRefused as exc:
        print(f"hookstream dlq: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from deploy.reconcile import reconcile

    return reconcile(settings, since=args.since, apply=args.apply)


class ConfigurationError(HookstreamError):
    """A HOOKSTREAM_* variable has a value that cannot be used."""


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"HOOKSTREAM_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"bad configuration: {problems}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings()
    except ConfigurationError as exc:
        print(f"hookstream: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        code: int = args.func(args, settings)
    except HookstreamError as exc:
        print(f"hookstream: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        print(f"hookstream: Kafka at {settings.kafka_bootstrap}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT  # what a shell reports for a command stopped by Ctrl-C
    except BrokenPipeError:
        # The reader left (`| head`, `| grep -q`): nothing more to say. stdout is pointed
        # at /dev/null so that flushing it at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
