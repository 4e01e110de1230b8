"""The `kms` command line.

    kms db start|stop|status|upgrade   the campaign database
    kms up | down | status             Airflow (scheduler, DAG processor, triggerer, UI)
    kms airflow ARGS...                the airflow CLI with kms's environment
    kms generate --guests N ...        the resort's source-system exports
    kms simulate responses RUN_ID      opens, clicks and bookings of a delivered run, with a planted uplift
    kms identity resolve|evaluate      the single customer view and its quality
    kms api serve | key create|revoke|list   the real-time ingest API and its keys
    kms selection list|validate|preview      target groups (selections/) and their waterfall
    kms campaign list|validate [FILE...]     campaign definitions (campaigns/)
    kms template check|preview|proof         message templates: check, render for a contact, send proofs
    kms smtp serve                     the local SMTP sink (stores mail as .eml files)
    kms report render|index|email      campaign reports (HTML, PDF, index page, by email)
    kms demo                           the main job on the embedded default

An expected failure prints one line on stderr and exits 1; a usage error exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from campaign_lib.config import load_settings
from campaign_lib.errors import KmsError

DEMO_GUESTS = 20_000
DEFAULT_SEED = 42


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line instead of usage plus error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _db_start(_args: argparse.Namespace) -> None:
    from campaign_lib.db import display_url, open_databases

    databases = open_databases(load_settings())
    print(f"campaign database: {display_url(databases.kms)}")
    print(f"airflow metadata:  {display_url(databases.airflow)}")


def _db_stop(_args: argparse.Namespace) -> None:
    from campaign_lib.db import embedded_server

    settings = load_settings()
    if not settings.uses_embedded_database:
        print("KMS_DATABASE_URL is set: kms does not manage that server")
        return
    stopped = embedded_server(settings).stop()
    print("stopped" if stopped else "not running")


def _db_status(_args: argparse.Namespace) -> None:
    from campaign_lib.db import check_reachable, display_url, embedded_server, make_engine
    from campaign_lib.db.migrate import current_revision, head_revision

    settings = load_settings()
    if settings.uses_embedded_database:
        status = embedded_server(settings).status()
        if not status.running:
            print(f"embedded PostgreSQL: stopped (data in {status.data_dir})")
            return
        print(f"embedded PostgreSQL: running, pid {status.pid}, data in {status.data_dir}")
        url = embedded_server(settings).url("kms")
    else:
        url = settings.database_url
        check_reachable(url)
        print(f"external PostgreSQL: reachable at {display_url(url)}")
    engine = make_engine(url)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    state = "up to date" if revision == head else f"behind (head is {head}; run kms db upgrade)"
    print(f"schema revision: {revision or 'none'}, {state}")


def _upgrade_schema(url) -> tuple[str | None, str]:
    from campaign_lib.db import make_engine
    from campaign_lib.db.migrate import upgrade

    engine = make_engine(url)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()


def _db_upgrade(_args: argparse.Namespace) -> None:
    from campaign_lib.db import open_databases

    before, after = _upgrade_schema(open_databases(load_settings()).kms)
    print(f"schema at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))


def _airflow(args: argparse.Namespace) -> None:
    from campaign_lib.airflow_runtime import airflow_command, airflow_environment
    from campaign_lib.db import open_databases

    settings = load_settings()
    env = airflow_environment(settings, open_databases(settings))
    command = airflow_command(*args.airflow_args)
    os.execve(command[0], command, env)


def _up(_args: argparse.Namespace) -> None:
    from campaign_lib.airflow_runtime import (
        AirflowServices,
        airflow_environment,
        delivery_connections,
        ensure_port_free,
        migrate_metadata,
    )
    from campaign_lib.db import open_databases

    settings = load_settings()
    services = AirflowServices(settings)
    if "api-server" not in services.running():
        ensure_port_free(settings.airflow_port)
    databases = open_databases(settings)
    _upgrade_schema(databases.kms)
    env = airflow_environment(settings, databases)
    env |= delivery_connections(settings, env)
    if not services.running():
        print("migrating the Airflow metadata database ...", flush=True)
        migrate_metadata(env, services.log_dir / "db-migrate.log")
    print("starting scheduler, dag-processor, triggerer and api-server ...", flush=True)
    endpoint = services.start(env)
    print(f"Airflow UI: {endpoint.url}")
    password = endpoint.password or "(see simple_auth_manager_passwords.json.generated)"
    print(f"login:      {endpoint.user} / {password}")
    print(f"logs:       {services.log_dir}")


def _down(_args: argparse.Namespace) -> None:
    from campaign_lib.airflow_runtime import AirflowServices

    stopped = AirflowServices(load_settings()).stop()
    print(f"stopped: {', '.join(stopped)}" if stopped else "Airflow was not running")


def _status(_args: argparse.Namespace) -> None:
    from campaign_lib.airflow_runtime import AirflowServices

    services = AirflowServices(load_settings())
    running = services.running()
    for name in services.commands():
        print(f"{name:18} {'running, pid ' + str(running[name]) if name in running else 'stopped'}")
    if "api-server" in running:
        print(f"Airflow UI: {services.endpoint().url}")


def _generate(args: argparse.Namespace) -> None:
    from campaign_lib.generator import generate

    try:
        summary = generate(Path(args.out), guests=args.guests, seed=args.seed, workers=args.workers)
    except ValueError as exc:
        raise KmsError(str(exc)) from exc
    print(json.dumps(summary.as_dict(), indent=2))


def _simulate_responses(args: argparse.Namespace) -> None:
    from campaign_lib.generator.responses import ResponseTruth, simulate_responses
    from campaign_lib.reporting import reports_folder
    from campaign_lib.tracking.tokens import tracking_links_from_env

    try:
        truth = ResponseTruth(
            base_rate=args.base_rate, uplift=args.uplift, bystander_bookings=args.bystanders
        )
    except ValueError as exc:
        raise KmsError(str(exc)) from exc
    result = simulate_responses(
        _campaign_engine(),
        args.campaign_run_id,
        truth=truth,
        links=tracking_links_from_env(),
        drop_dir=Path(args.drop_dir) if args.drop_dir else load_settings().sftp_root,
        truth_dir=reports_folder() / "truth",
        seed=args.seed,
    )
    print(json.dumps(result.as_dict(), indent=2))
    if result.failed_requests:
        raise KmsError(
            f"{len(result.failed_requests)} tracking requests failed, e.g. {result.failed_requests[0]}"
        )


def _campaign_engine():
    from campaign_lib.db import make_engine, open_databases

    return make_engine(open_databases(load_settings()).kms)


def _delivery_status(args: argparse.Namespace) -> None:
    from campaign_lib.delivery import delivery_state

    print(delivery_state(_campaign_engine(), args.campaign_run_id).as_text())


def _delivery_resume(args: argparse.Namespace) -> None:
    from datetime import UTC, datetime

    from campaign_lib.delivery import campaign_of_run, resume_delivery

    engine = _campaign_engine()
    if not resume_delivery(engine, args.campaign_run_id):
        raise KmsError(f"campaign run {args.campaign_run_id} is not paused")
    print(
        f"campaign run {args.campaign_run_id} resumed: clear its failed deliver_* tasks in Airflow, "
        f"or run `kms delivery send {args.campaign_run_id}`"
    )
    window = campaign_of_run(engine, args.campaign_run_id).send_window
    opens = window.opens_at(datetime.now(UTC))
    if opens is not None:
        print(
            f"Its send window ({window.describe()}) is closed until {window.local_time(opens)}: the "
            "cleared tasks and `kms delivery send` wait for it (`--send-now` sends outside it)."
        )


def _privacy_erase(args: argparse.Namespace) -> None:
    from campaign_lib.privacy import erase

    engine = _campaign_engine()
    try:
        result = erase(
            engine,
            email=args.email,
            phone=args.phone,
            contact_id=args.contact,
            region=args.region,
            requested_by=args.requested_by,
            reason=args.reason,
        )
    finally:
        engine.dispose()
    print(result.as_text())


def _privacy_export(args: argparse.Namespace) -> None:
    from campaign_lib.privacy import person_data

    engine = _campaign_engine()
    try:
        named = {"email": args.email, "phone": args.phone, "contact_id": args.contact}
        data = person_data(engine, region=args.region, **named)
    finally:
        engine.dispose()
    document = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    if args.out:
        Path(args.out).write_text(document, encoding="utf-8")
        print(f"{args.out}: contacts {', '.join(map(str, data['contact_ids'])) or 'none'}")
    else:
        sys.stdout.write(document)


def _privacy_log(args: argparse.Namespace) -> None:
    from campaign_lib.privacy import erasures

    engine = _campaign_engine()
    try:
        entries = erasures(engine, args.limit)
    finally:
        engine.dispose()
    if not entries:
        print("no erasures")
    for entry in entries:
        rows = sum(entry.erased_rows.values())
        print(
            f"{entry.erasure_id}\t{entry.requested_at:%Y-%m-%d %H:%M}\t{entry.requested_by}\t"
            f"contacts {','.join(map(str, entry.contact_ids)) or '-'}\t{rows} rows\t{entry.reason or ''}"
        )


def _delivery_reconcile(args: argparse.Namespace) -> None:
    from campaign_lib.delivery import reconcile

    policy = {c: getattr(args, c) for c in ("email", "sms", "push") if getattr(args, c)}
    done = reconcile(_campaign_engine(), args.campaign_run_id, policy)
    print(
        f"leases expired {done.expired}, settled by receipts {done.from_receipts}, "
        f"back to pending {done.resent}, assumed sent {done.assumed_sent}, still ambiguous {done.held}"
    )


def _delivery_send(args: argparse.Namespace) -> None:
    from campaign_lib.airflow_adapter import delivery_connector, tracking_links
    from campaign_lib.delivery import deliver_run, delivery_state, materialise_outbox, plan_batches

    engine = _campaign_engine()
    # The connectors needed are those of the planned batches: a run frozen but never
    # delivered has its outbox built first (idempotent; deliver_run would do it too).
    materialise_outbox(engine, args.campaign_run_id)
    channels = [c for c, batches in plan_batches(engine, args.campaign_run_id).items() if batches]
    results = deliver_run(
        engine,
        args.campaign_run_id,
        {c: delivery_connector(c) for c in channels},
        tracking_links(),
        send_now=args.send_now,
    )
    state = delivery_state(engine, args.campaign_run_id)
    print(state.as_text())
    closed = next((result.window_closed for result in results if result.window_closed), None)
    if closed:
        unsent = sum(
            n
            for by_status in state.counts.values()
            for status, n in by_status.items()
            if status in ("pending", "failed_soft")
        )
        print(
            f"Stopped: {closed}; {unsent:,} messages wait for it. Run `kms delivery send "
            f"{args.campaign_run_id}` again then, or add --send-now to send outside the window."
        )


def _identity_resolve(_args: argparse.Namespace) -> None:
    from campaign_lib.identity.cli import resolve_command

    engine = _campaign_engine()
    try:
        print(resolve_command(engine))
    finally:
        engine.dispose()


def _identity_evaluate(args: argparse.Namespace) -> None:
    from campaign_lib.identity.cli import evaluate_command

    ground_truth = Path(
        args.ground_truth
        or load_settings().home / "demo" / "generated" / "ground_truth" / "ground_truth.csv.gz"
    )
    if not ground_truth.is_file():
        raise KmsError(f"no ground truth at {ground_truth}; run kms demo or pass --ground-truth")
    engine = _campaign_engine()
    try:
        print(evaluate_command(engine, ground_truth))
    finally:
        engine.dispose()


def _sftp_serve(_args: argparse.Namespace) -> None:
    from campaign_lib.airflow_runtime import LOCAL_SFTP_USER, local_sftp_password
    from campaign_lib.local_servers.sftp import persistent_host_key, serve_forever

    settings = load_settings()
    print(
        f"serving {settings.sftp_root} on sftp://{LOCAL_SFTP_USER}@127.0.0.1:{settings.sftp_port}/",
        flush=True,
    )
    serve_forever(
        settings.sftp_root,
        port=settings.sftp_port,
        username=LOCAL_SFTP_USER,
        password=local_sftp_password(settings.home),
        host_key=persistent_host_key(settings.home / "sftp_host_key"),
    )


def _providers_serve(_args: argparse.Namespace) -> None:
    from campaign_lib.local_servers.provider_setup import local_providers
    from campaign_lib.local_servers.providers import serve_forever

    settings = load_settings()
    providers = local_providers(settings.home)
    print(
        f"SMS (Twilio API), FCM and Web Push emulators on {providers.base_url}; accepted messages in "
        f"{providers.folder}/{{sms,fcm,webpush}}.jsonl and at {providers.base_url}/_emulator/messages",
        flush=True,
    )
    serve_forever(providers.folder, port=providers.port, **providers.emulator_options())


def _api_serve(args: argparse.Namespace) -> None:
    from campaign_lib.airflow_runtime import ensure_port_free
    from campaign_lib.api import serve
    from campaign_lib.db import open_databases

    ensure_port_free(args.port)
    url = open_databases(load_settings()).kms
    _upgrade_schema(url)
    serve(host=args.host, port=args.port, engine_url=url)


def _api_key_create(args: argparse.Namespace) -> None:
    from campaign_lib.api import create_key

    engine = _campaign_engine()
    try:
        key_id, plaintext = create_key(engine, args.name, args.scope, owner=args.owner)
    finally:
        engine.dispose()
    print(f"key id: {key_id}")
    print(f"key:    {plaintext}")
    print("store the key now: it is shown once and kept only as a hash")


def _api_key_revoke(args: argparse.Namespace) -> None:
    from campaign_lib.api import revoke_key

    engine = _campaign_engine()
    try:
        revoked_at = revoke_key(engine, args.key_id)
    finally:
        engine.dispose()
    print(f"revoked {args.key_id} at {revoked_at:%Y-%m-%d %H:%M:%S %Z}")


def _api_key_list(_args: argparse.Namespace) -> None:
    from campaign_lib.api import list_keys

    engine = _campaign_engine()
    try:
        keys = list_keys(engine)
    finally:
        engine.dispose()
    print(f"{'key id':<18} {'name':<24} {'scopes':<32} {'created':<17} {'revoked':<17} last used")
    for key in keys:
        print(
            f"{key.key_id:<18} {key.name:<24} {','.join(key.scopes):<32} {_when(key.created_at):<17} "
            f"{_when(key.revoked_at):<17} {_when(key.last_used_at)}"
        )


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def _selection_list(_args: argparse.Namespace) -> None:
    from campaign_lib.selection import SelectionError, list_selections, load_selection

    for name in list_selections():
        try:
            selection = load_selection(name)
        except SelectionError as exc:
            print(f"{name:<40} INVALID: {exc}")
            continue
        params = ", ".join(selection.params) or "no parameters"
        print(f"{name:<40} {selection.kind:<5} {selection.version}  {params}  {selection.description}")


def _selection_validate(args: argparse.Namespace) -> None:
    from campaign_lib.selection import SelectionError, list_selections, load_selection

    problems = []
    for name in args.names or list_selections():
        try:
            load_selection(name)
        except SelectionError as exc:
            problems.append(str(exc))
        else:
            print(f"{name}: valid")
    if problems:
        raise KmsError("\n".join(problems))


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise KmsError(f"--param takes name=value, not {pair!r}")
        params[key] = value
    return params


def _selection_preview(args: argparse.Namespace) -> None:
    import time

    from campaign_lib.campaign.runs import preview

    params = _parse_params(args.param)
    engine = _campaign_engine()
    try:
        started = time.perf_counter()
        waterfall = preview(engine, args.name, params, args.campaign)
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    print(waterfall.as_text())
    print(f"({elapsed:.2f} s, nothing written)")


def _campaign_list(_args: argparse.Namespace) -> None:
    from campaign_lib.campaign.definition import load_campaigns

    valid, invalid = load_campaigns()
    for name, loaded in valid.items():
        c = loaded.campaign
        print(
            f"{name:<34} {c.dag_id:<46} selection {c.selection.name}; {', '.join(c.channels)}; "
            f"schedule {c.schedule or 'none'}"
        )
    for path in invalid:
        print(f"{path.stem:<34} INVALID (kms campaign validate {path})")


def _campaign_validate(args: argparse.Namespace) -> None:
    from campaign_lib.campaign.definition import campaigns_folder, load_campaign, shown_path
    from campaign_lib.campaign.references import checked_selection
    from campaign_lib.rendering import load_campaign_templates

    paths = [Path(f) for f in args.files] or sorted(campaigns_folder().glob("*.y*ml"))
    problems = []
    engine = None
    for path in paths:
        try:
            loaded = load_campaign(path)
            checked_selection(loaded)
            load_campaign_templates(loaded.campaign)
        except KmsError as exc:
            problems.append(str(exc))
        else:
            print(f"{shown_path(path)}: valid")
            engine = engine or _campaign_engine()
            print(_detection_line(engine, loaded.campaign))
    if engine is not None:
        engine.dispose()
    if problems:
        raise KmsError("\n".join(problems))


def _detection_line(engine, campaign) -> str:
    """The minimum detectable effect of a campaign for `kms campaign validate`."""
    from campaign_lib.reporting import reports_folder
    from campaign_lib.reporting.power import expected_detection

    try:
        return expected_detection(engine, campaign, reports_folder()).line()
    except KmsError as exc:
        return f"  minimum detectable effect: unknown ({exc})"


def _template_check(args: argparse.Namespace) -> None:
    from campaign_lib.campaign.definition import find_campaign, load_campaigns
    from campaign_lib.rendering import load_campaign_templates

    if args.campaigns:
        loaded = {name: find_campaign(name) for name in args.campaigns}
    else:
        loaded, invalid = load_campaigns()
        if invalid:
            raise KmsError("\n".join(invalid.values()))
    problems = []
    for name, campaign_file in loaded.items():
        try:
            load_campaign_templates(campaign_file.campaign)
        except KmsError as exc:
            problems.append(str(exc))
        else:
            print(f"{name}: templates valid ({', '.join(campaign_file.campaign.channels)})")
    if problems:
        raise KmsError("\n".join(problems))


def _template_preview(args: argparse.Namespace) -> None:
    from campaign_lib.campaign.definition import find_campaign
    from campaign_lib.rendering import load_campaign_templates
    from campaign_lib.rendering.proof import PREVIEW_MESSAGE_KEY, SAMPLE_RECIPIENT, recipient_of_contact
    from campaign_lib.tracking.tokens import tracking_links_from_env

    campaign = find_campaign(args.campaign).campaign
    templates = load_campaign_templates(campaign)
    if args.contact is None:
        recipient = SAMPLE_RECIPIENT
    else:
        engine = _campaign_engine()
        try:
            recipient = recipient_of_contact(engine, args.contact)
        finally:
            engine.dispose()
    for channel in [args.channel] if args.channel else campaign.channels:
        rendered = templates.render(channel, recipient, tracking_links_from_env(), PREVIEW_MESSAGE_KEY)
        print(f"== {channel}")
        if rendered.subject is not None:
            print(f"Subject: {rendered.subject}")
        for name, value in rendered.headers.items():
            print(f"{name}: {value}")
        print(rendered.text)
        if rendered.html is not None and args.html:
            Path(args.html).write_text(rendered.html, encoding="utf-8")
            print(f"(HTML part written to {args.html})")


def _template_proof(args: argparse.Namespace) -> None:
    from campaign_lib.campaign.definition import find_campaign
    from campaign_lib.rendering.proof import send_proofs
    from campaign_lib.tracking.tokens import tracking_links_from_env
    from connectors.email import EmailConnector, smtp_connection_from_env

    addresses = [address.strip() for address in args.to.split(",") if address.strip()]
    loaded = find_campaign(args.campaign)
    engine = _campaign_engine()
    try:
        with EmailConnector.from_connection(smtp_connection_from_env()) as connector:
            sent = send_proofs(engine, loaded, addresses, connector, tracking_links_from_env(), args.contact)
    finally:
        engine.dispose()
    for proof in sent:
        print(f"{proof.address}: {proof.status}" + (f" ({proof.reason})" if proof.reason else ""))
    if any(proof.status != "sent" for proof in sent):
        raise KmsError("not every proof was sent (logged in campaign.proof_send)")


def _smtp_serve(args: argparse.Namespace) -> None:
    from campaign_lib.local_servers.smtp import serve_forever
    from connectors.email import LOCAL_SMTP_PORT

    folder = Path(args.dir) if args.dir else load_settings().home / "mail"
    port = args.port or int(os.environ.get("KMS_SMTP_PORT") or LOCAL_SMTP_PORT)
    serve_forever(folder, port=port)


def _demo(args: argparse.Namespace) -> None:
    from campaign_lib import demo
    from campaign_lib.db import make_engine, open_databases

    settings = load_settings()
    url = open_databases(settings).kms
    _upgrade_schema(url)
    engine = make_engine(url)
    try:
        demo.run(engine, url, settings, args.guests)
    finally:
        engine.dispose()


def _report_run_id(engine, args: argparse.Namespace) -> int:
    from campaign_lib.reporting.report import latest_run

    return args.run_id if args.run_id is not None else latest_run(engine, args.campaign)


def _report_render(args: argparse.Namespace) -> None:
    from campaign_lib.reporting import render_campaign_report, render_index

    engine = _campaign_engine()
    out = Path(args.out) if args.out else None
    try:
        path = render_campaign_report(
            engine, _report_run_id(engine, args), out, model=args.model, page_images=args.png
        )
        index = render_index(engine, out)
    finally:
        engine.dispose()
    print(f"report: {path}\npdf:    {path.with_suffix('.pdf')}\nindex:  {index}")


def _report_index(args: argparse.Namespace) -> None:
    from campaign_lib.reporting import render_index

    engine = _campaign_engine()
    try:
        print(render_index(engine, Path(args.out) if args.out else None))
    finally:
        engine.dispose()


def _report_email(args: argparse.Namespace) -> None:
    from campaign_lib.reporting import render_campaign_report
    from campaign_lib.reporting.mailer import email_report
    from connectors.email import smtp_connection_from_env

    engine = _campaign_engine()
    try:
        path = render_campaign_report(engine, _report_run_id(engine, args), model=args.model)
    finally:
        engine.dispose()
    sent = email_report(path, args.to, smtp_connection_from_env())
    delivered = [r for r in args.to if r not in sent.refused]
    print(f"sent {sent.subject!r} to {', '.join(delivered)}")
    if sent.refused:
        raise KmsError("refused: " + "; ".join(f"{r} ({reply})" for r, reply in sent.refused.items()))


def _report_target(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("run_id", nargs="?", type=int, help="the campaign run id")
    which.add_argument("--campaign", help="the latest run of this campaign")
    parser.add_argument(
        "--model",
        help="attribution model: last_touch, first_touch, linear, time_decay, position_based or markov "
        "(default: KMS_ATTRIBUTION_MODEL or last_touch)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kms", description="kms: campaign management on Apache Airflow")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    db = commands.add_parser("db", help="the campaign database").add_subparsers(
        dest="db_command", required=True, parser_class=_Parser
    )
    db.add_parser("start", help="start the embedded PostgreSQL (or reuse it)").set_defaults(func=_db_start)
    db.add_parser("stop", help="stop the embedded PostgreSQL").set_defaults(func=_db_stop)
    db.add_parser("status", help="server and schema state").set_defaults(func=_db_status)
    db.add_parser("upgrade", help="migrate the schema to the newest revision").set_defaults(func=_db_upgrade)

    commands.add_parser("up", help="start Airflow and wait until its UI answers").set_defaults(func=_up)
    commands.add_parser("down", help="stop Airflow").set_defaults(func=_down)
    commands.add_parser("status", help="which Airflow components run").set_defaults(func=_status)

    airflow = commands.add_parser("airflow", help="run the airflow CLI with kms's environment")
    airflow.add_argument("airflow_args", nargs=argparse.REMAINDER)
    airflow.set_defaults(func=_airflow)

    generate = commands.add_parser("generate", help="write the resort's source-system exports")
    generate.add_argument("--guests", type=int, required=True, help="number of persons")
    generate.add_argument("--seed", type=int, default=DEFAULT_SEED)
    generate.add_argument("--out", required=True, help="empty or new folder to write the drop folders to")
    generate.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    generate.set_defaults(func=_generate)

    simulate = commands.add_parser("simulate", help="a world with a known truth").add_subparsers(
        dest="simulate_command", required=True, parser_class=_Parser
    )
    responses = simulate.add_parser(
        "responses", help="opens and clicks (tracking URLs) and bookings (ticketing file) of a run"
    )
    responses.add_argument("campaign_run_id", type=int, metavar="RUN_ID")
    responses.add_argument("--seed", type=int, default=DEFAULT_SEED)
    responses.add_argument("--base-rate", type=float, default=0.04, help="booking share, no campaign")
    responses.add_argument("--uplift", type=float, default=0.03, help="added for treated members (absolute)")
    responses.add_argument("--bystanders", type=int, default=50, help="bookings outside the audience")
    responses.add_argument("--drop-dir", help="SFTP drop root (default $KMS_HOME/sftp)")
    responses.set_defaults(func=_simulate_responses)

    identity = commands.add_parser("identity", help="the single customer view").add_subparsers(
        dest="identity_command", required=True, parser_class=_Parser
    )
    identity.add_parser("resolve", help="resolve new and changed source records").set_defaults(
        func=_identity_resolve
    )
    evaluate = identity.add_parser("evaluate", help="precision and recall against a ground truth")
    evaluate.add_argument("--ground-truth", help="ground_truth.csv.gz (default: the demo's)")
    evaluate.set_defaults(func=_identity_evaluate)

    privacy = commands.add_parser("privacy", help="erasure on request (the right to be forgotten)")
    privacy = privacy.add_subparsers(dest="privacy_command", required=True, parser_class=_Parser)
    erase = privacy.add_parser("erase", help="erase a person and keep them out of later loads")
    export = privacy.add_parser("export", help="everything held about a person, as JSON (right of access)")
    for command in (erase, export):
        named = command.add_mutually_exclusive_group(required=True)
        named.add_argument("--email", help="the person's email address")
        named.add_argument("--phone", help="the person's phone number (E.164, or national in --region)")
        named.add_argument("--contact", type=int, help="the person's contact id")
        command.add_argument("--region", default="DE", help="region of a national phone number (default DE)")
    erase.add_argument("--requested-by", required=True, help="who asked: a name, an address or a ticket")
    erase.add_argument("--reason", help="free text for the log (no personal data)")
    erase.set_defaults(func=_privacy_erase)
    export.add_argument("--out", help="write the JSON to this file (default: standard output)")
    export.set_defaults(func=_privacy_export)
    log = privacy.add_parser("log", help="the erasure log, newest first (no personal data)")
    log.add_argument("--limit", type=int, default=50)
    log.set_defaults(func=_privacy_log)

    sftp = commands.add_parser("sftp", help="the local SFTP drop server").add_subparsers(
        dest="sftp_command", required=True, parser_class=_Parser
    )
    sftp.add_parser("serve", help="serve $KMS_HOME/sftp in the foreground (kms up runs it)").set_defaults(
        func=_sftp_serve
    )

    providers = commands.add_parser("providers", help="the local SMS and push provider emulators")
    providers.add_subparsers(dest="providers_command", required=True, parser_class=_Parser).add_parser(
        "serve", help="serve the SMS, FCM and Web Push emulators in the foreground"
    ).set_defaults(func=_providers_serve)

    api = commands.add_parser("api", help="the real-time ingest API").add_subparsers(
        dest="api_command", required=True, parser_class=_Parser
    )
    serve = api.add_parser("serve", help="serve the API standalone with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_api_serve)
    key = api.add_parser("key", help="API keys").add_subparsers(
        dest="key_command", required=True, parser_class=_Parser
    )
    create = key.add_parser("create", help="create a key (shown once)")
    create.add_argument("name")
    create.add_argument("--scope", action="append", required=True, help="events:write or contacts:write")
    create.add_argument("--owner")
    create.set_defaults(func=_api_key_create)
    revoke = key.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_api_key_revoke)
    key.add_parser("list", help="list keys (never their secrets)").set_defaults(func=_api_key_list)

    selection = commands.add_parser("selection", help="target groups (selections/)").add_subparsers(
        dest="selection_command", required=True, parser_class=_Parser
    )
    selection.add_parser("list", help="every selection with its kind, version and parameters").set_defaults(
        func=_selection_list
    )
    validate = selection.add_parser("validate", help="check selection files (default: all)")
    validate.add_argument("names", nargs="*")
    validate.set_defaults(func=_selection_validate)
    preview = selection.add_parser("preview", help="print a selection's waterfall; writes nothing")
    preview.add_argument("name")
    preview.add_argument("--param", action="append", default=[], help="name=value (repeatable)")
    preview.add_argument("--campaign", help="apply this campaign's funnel (channels, consent, control ...)")
    preview.set_defaults(func=_selection_preview)

    campaign = commands.add_parser("campaign", help="campaign definitions (campaigns/)").add_subparsers(
        dest="campaign_command", required=True, parser_class=_Parser
    )
    campaign.add_parser("list", help="every definition with its DAG").set_defaults(func=_campaign_list)
    check = campaign.add_parser("validate", help="check definitions and their references (default: all)")
    check.add_argument("files", nargs="*")
    check.set_defaults(func=_campaign_validate)

    delivery = commands.add_parser("delivery", help="a campaign run's outbox").add_subparsers(
        dest="delivery_command", required=True, parser_class=_Parser
    )
    for name, helptext, func in (
        ("status", "the run's delivery state and its messages by channel and status", _delivery_status),
        ("resume", "resume a paused run with a fresh error budget", _delivery_resume),
        ("send", "send what is left of a run here (connections kms_smtp, kms_sms, ...)", _delivery_send),
    ):
        command = delivery.add_parser(name, help=helptext)
        command.add_argument("campaign_run_id", type=int, metavar="RUN")
        command.set_defaults(func=func)
        if name == "send":
            command.add_argument(
                "--send-now",
                action="store_true",
                help="send at once, outside the campaign's send window (by default only inside it)",
            )
    reconcile = delivery.add_parser(
        "reconcile", help="settle ambiguous messages: receipts first, then a policy per channel"
    )
    reconcile.add_argument("campaign_run_id", type=int, metavar="RUN")
    for channel in ("email", "sms", "push"):
        reconcile.add_argument(
            f"--{channel}", choices=("hold", "resend", "assume_sent"), help=f"policy for {channel}"
        )
    reconcile.set_defaults(func=_delivery_reconcile)

    template = commands.add_parser("template", help="message templates (templates/messages/)").add_subparsers(
        dest="template_command", required=True, parser_class=_Parser
    )
    template_check = template.add_parser("check", help="check the templates of campaigns (default: all)")
    template_check.add_argument("campaigns", nargs="*")
    template_check.set_defaults(func=_template_check)
    template_preview = template.add_parser("preview", help="render a campaign's messages; sends nothing")
    template_preview.add_argument("campaign")
    template_preview.add_argument("--contact", type=int, help="contact id (default: a sample person)")
    template_preview.add_argument("--channel", choices=("email", "sms", "push"), help="default: all")
    template_preview.add_argument("--html", help="write the email's HTML part to this file")
    template_preview.set_defaults(func=_template_preview)
    template_proof = template.add_parser("proof", help="send proof emails to seed addresses (not reported)")
    template_proof.add_argument("campaign")
    template_proof.add_argument("--to", required=True, help="comma-separated addresses")
    template_proof.add_argument("--contact", type=int, help="whose data to use (default: a sample person)")
    template_proof.set_defaults(func=_template_proof)

    smtp = commands.add_parser("smtp", help="the local SMTP sink").add_subparsers(
        dest="smtp_command", required=True, parser_class=_Parser
    )
    smtp_serve = smtp.add_parser("serve", help="accept mail on 127.0.0.1 and store it as .eml files")
    smtp_serve.add_argument("--port", type=int, help="default: KMS_SMTP_PORT or 8025")
    smtp_serve.add_argument("--dir", help="default: $KMS_HOME/mail")
    smtp_serve.set_defaults(func=_smtp_serve)

    report = commands.add_parser("report", help="campaign reports").add_subparsers(
        dest="report_command", required=True, parser_class=_Parser
    )
    render = report.add_parser("render", help="render a run's report (HTML and PDF) and the index page")
    _report_target(render)
    render.add_argument("--out", help="folder (default: KMS_REPORTS_DIR or $KMS_HOME/reports)")
    render.add_argument("--png", action="store_true", help="also write each PDF page as run_<id>_page<n>.png")
    render.set_defaults(func=_report_render)
    index = report.add_parser("index", help="render the index page of all campaign runs")
    index.add_argument("--out", help="folder (default: KMS_REPORTS_DIR or $KMS_HOME/reports)")
    index.set_defaults(func=_report_index)
    mail = report.add_parser("email", help="render a run's report and email it (SMTP connection kms_smtp)")
    _report_target(mail)
    mail.add_argument("--to", action="append", required=True, help="a recipient (repeat for more)")
    mail.set_defaults(func=_report_email)

    demo = commands.add_parser("demo", help="the main job on the embedded default")
    demo.add_argument("--guests", type=int, default=DEMO_GUESTS)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kms` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KmsError as exc:
        print(f"kms: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kms: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
