"""The command line: parse, call one core function, render the result. The only click user."""

from __future__ import annotations

import getpass
import json
import os
import secrets as _random
import string
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from devsecrets import __version__
from devsecrets.app import App, say, speller, warn
from devsecrets.errors import EXIT_OK, DevsecretsError, UsageProblem, error_lines

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

    from devsecrets.compose import ComposeOptions
    from devsecrets.deploy import Confirm, Plan
    from devsecrets.stackops import StackContext
    from devsecrets.store import Progress
    from devsecrets.store.trust import Review
    from devsecrets.swarm import Target

ALPHABETS = {
    "alnum": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "base64url": string.ascii_letters + string.digits + "-_",
    "printable": string.ascii_letters + string.digits + string.punctuation,
}


pass_app = click.make_pass_decorator(App)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="devsecrets")
@click.option(
    "--store",
    "store_option",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DEVSECRETS_STORE",
    help="Store directory (default: nearest .devsecrets/ upwards). Env: DEVSECRETS_STORE.",
)
@click.option("--debug", is_flag=True, envvar="DEVSECRETS_DEBUG", help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, store_option: Path | None, debug: bool) -> None:
    """Run your Docker Swarm stack locally with real secrets, safely.

    Secrets live encrypted in .devsecrets/ (SOPS files, age keys) and are shared through git.
    """
    del debug  # read by main() before click runs, so that it covers click's own errors too
    ctx.obj = App(env=dict(os.environ), cwd=Path.cwd(), store_option=store_option)


# -- completion (the callbacks run before the group callback: no App yet) ---------------------


def complete_secret(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Secret names from the store's file names; nothing is decrypted."""
    from devsecrets.completion import secret_names

    store = ctx.find_root().params.get("store_option")
    names = secret_names(Path.cwd(), str(store) if store else None, os.environ)
    return [n for n in names if n.startswith(incomplete)]


def _services(ctx: click.Context) -> list[str]:
    from devsecrets.completion import service_names

    files = ctx.params.get("files") or ()
    return service_names(Path.cwd(), os.environ, files, ctx.params.get("project_directory"))


def complete_service(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [n for n in _services(ctx) if n.startswith(incomplete)]


def complete_compose_args(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """The compose command first, then service names."""
    from devsecrets.completion import COMPOSE_COMMANDS

    if not ctx.params.get("compose_args"):
        return [c for c in COMPOSE_COMMANDS if c.startswith(incomplete)]
    return complete_service(ctx, param, incomplete)


def complete_on_change(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    service, sep, policy = incomplete.partition("=")
    if sep:
        policies = ("none", "restart", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTERM")
        return [f"{service}={p}" for p in policies if p.startswith(policy)]
    return [f"{n}=" for n in _services(ctx) if n.startswith(service)]


# fish: our own script and line format. click 8.4's fish script is broken (a literal newline
# lands in its `string split`, so fish fails on every completion), and its line format has
# changed between click versions; this pair is tested through the real fish.
_FISH_SOURCE = """\
function %(complete_func)s
    set -l response (env %(complete_var)s=fish_complete COMP_WORDS=(commandline -cp) \\
        COMP_CWORD=(commandline -t) %(prog_name)s)
    for completion in $response
        set -l item (string split -m 2 \\t -- $completion)
        switch $item[1]
            case dir
                __fish_complete_directories $item[2]
            case file
                __fish_complete_path $item[2]
            case plain
                if test -n "$item[3]"
                    printf '%%s\\t%%s\\n' $item[2] $item[3]
                else
                    printf '%%s\\n' $item[2]
                end
        end
    end
end

complete --no-files --command %(prog_name)s --arguments "(%(complete_func)s)"
"""


def _use_our_fish() -> None:
    """Register our fish script and format with click (imported only when completing)."""
    from click.shell_completion import CompletionItem, FishComplete, add_completion_class

    class OurFish(FishComplete):
        source_template = _FISH_SOURCE

        def format_completion(self, item: CompletionItem) -> str:
            """`type<TAB>value<TAB>help` on one line (tabs, newlines inside: spaces)."""
            fields = (item.type, item.value, item.help or "")
            return "\t".join(" ".join(str(f).split()) for f in fields)

    add_completion_class(OurFish, "fish")


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: commands, options, secret and service names.

    Secret names come from the store's file names (nothing is decrypted), service names from
    the stack files compose would find.

    \b
    Examples:
      eval "$(devsecrets completion bash)"     # in ~/.bashrc (bash >= 4.4)
      eval "$(devsecrets completion zsh)"      # in ~/.zshrc, after compinit
      devsecrets completion fish > ~/.config/fish/completions/devsecrets.fish
    """
    from click.shell_completion import get_completion_class

    _use_our_fish()
    completer = get_completion_class(shell)
    assert completer is not None  # noqa: S101 - click.Choice admits only known shells
    click.echo(completer(cli, {}, "devsecrets", "_DEVSECRETS_COMPLETE").source())


# -- the store -------------------------------------------------------------------------------


@cli.command()
@click.option("--name", "member", help="Your recipient name (default: your login name).")
@click.option("--no-git", is_flag=True, help="Do not set up the git merge and diff drivers.")
@pass_app
def init(app: App, member: str | None, no_git: bool) -> None:
    """Create the store here with you as its first recipient, or ask to join an existing one.

    Creates an age identity if you have none (at SOPS_AGE_KEY_FILE if that names a file that
    does not exist yet, else at sops' default location; never overwrites one). In a store you
    are not a recipient of, records a join request (.devsecrets/requests/NAME.pub) for you to
    commit and push; a member approves it with `devsecrets recipients add NAME`. In a git
    work tree, also sets up git drivers that merge store files by meaning and diff them
    without values (.devsecrets/.gitattributes, committed; the commands in .git/config). It
    asks first on a terminal. Safe to run again.
    """
    from devsecrets.errors import StoreNotFoundError
    from devsecrets.keys import create_key_file, default_key_file
    from devsecrets.store import STORE_DIR, find_store
    from devsecrets.store.join import init_or_join

    identities = app.identities()
    if identities.public:
        recipient = identities.public[0]
    else:
        # sops users point SOPS_AGE_KEY_FILE at where they want their key: create it there.
        named = app.env.get("SOPS_AGE_KEY_FILE")
        key_file = Path(named) if named else default_key_file(app.env)
        if key_file.exists():
            raise DevsecretsError(
                f"{key_file} exists but holds no usable age identity",
                hint="fix or move that file; devsecrets never overwrites it",
            )
        recipient = create_key_file(key_file, _now())
        _say(f"created age identity {key_file} (back it up; it is your key to the store)")
    try:
        root = find_store(app.cwd, app.store_option).root
    except StoreNotFoundError:
        root = app.store_option or app.cwd / STORE_DIR
    joined = init_or_join(root, member or getpass.getuser(), recipient, app.approvals(root))
    _say(f"store {joined.store.root}")
    _say(f"your public key: {recipient}")
    if joined.created:
        _say("created the store with you as its first recipient")
    elif joined.member:
        _say("you are already a recipient")
    if joined.request is not None:
        request = joined.request
        members = ", ".join(joined.store.recipients())
        _say(f"you are not a recipient yet; recorded your join request as {request.name!r}")
        _say("next:")
        message = f"devsecrets: {request.name} asks to join"
        _say(f"  1. git add {request.path} && git commit -m '{message}' && git push")
        _say(f"  2. ask a member ({members}) to pull, check your key with you and run")
        _say(f"     `devsecrets recipients add {request.name}`, then push")
        _say("  3. git pull; then `devsecrets get NAME` works")
    else:
        _say("next: `devsecrets set NAME` and commit .devsecrets/")
    if not no_git:
        _setup_git(joined.store.root)


def _setup_git(root: Path) -> None:
    from devsecrets import gitdriver

    if gitdriver.work_tree(root) is None:
        return
    if sys.stdin.isatty() and not click.confirm(
        "set up git to merge store files by meaning and diff them without values?",
        default=True,
        err=True,
    ):
        _say("skipped the git drivers; `devsecrets init` again sets them up")
        return
    top = gitdriver.setup(root)
    _say(
        f"set up git merge and diff drivers in {top}/.git/config "
        f"(commit {root.name}/.gitattributes; skip with --no-git)"
    )


@cli.command()
@pass_app
def whoami(app: App) -> None:
    """Your identities: recipient name(s) in this store, public key, where each was found.

    Works outside a store too; then no names are shown. Prints public keys only.
    """
    from devsecrets.errors import StoreNotFoundError
    from devsecrets.store.join import whoami as who

    try:
        members = app.store().recipients()
    except StoreNotFoundError:
        members = None
    rows = who(app.identities(), members)
    if not rows:
        app.identities().require()
    for row in rows:
        names = ", ".join(row.names) or ("(not a recipient)" if members is not None else "-")
        click.echo(f"{names}  {row.public or '(public key unknown)'}  {row.source}")


@cli.command("set")
@click.argument("name", required=False, shell_complete=complete_secret)
@click.option(
    "--from-file",
    "from_files",
    multiple=True,
    metavar="[NAME=]PATH",
    help="Read the value from this file (exact bytes). Without NAME, repeat it as "
    "--from-file NAME=PATH to store several secrets together: running stacks get them as "
    "one change (one reload, never a mismatched pair).",
)
@click.option("--generate", is_flag=True, help="Generate a random value.")
@click.option("--length", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--alphabet", type=click.Choice(list(ALPHABETS)), default="alnum", show_default=True)
@pass_app
def set_(
    app: App,
    name: str | None,
    from_files: tuple[str, ...],
    generate: bool,
    length: int,
    alphabet: str,
) -> None:
    """Store a secret. On a terminal, asks for the value twice without showing it (entries
    that differ store nothing; an empty entry stores an empty value, as stdin would).

    Otherwise the value comes from --from-file, --generate or stdin, as exact bytes (a
    trailing newline is kept). Never type a value on the command line: it stays in your
    shell history and in the process list.

    \b
    Examples:
      devsecrets set db_password                  # prompts, hidden, asks twice
      devsecrets set tls_key --from-file server.key
      devsecrets set api_token --generate --length 40
      devsecrets set tls_cert < cert.pem          # stdin from a file
      pass show shop/db | devsecrets set db_password   # stdin from another command
      devsecrets set --from-file tls_cert=cert.pem --from-file tls_key=key.pem  # together
    """
    from devsecrets.coredump import no_core_dumps
    from devsecrets.store import validate_name

    no_core_dumps()
    if from_files and generate:
        raise click.UsageError("use either --from-file or --generate, not both")
    store = app.store()
    _note(store.check_recipients())  # before the value is typed, not after
    if name is None:
        if not from_files:
            raise click.UsageError("missing NAME (or --from-file NAME=PATH, repeatable)")
        values = _named_files(from_files)
    else:
        validate_name(name)
        if len(from_files) > 1:
            raise click.UsageError(
                "several --from-file need a name each: "
                "devsecrets set --from-file NAME=PATH --from-file NAME=PATH"
            )
        if generate:
            value = "".join(_random.choice(ALPHABETS[alphabet]) for _ in range(length)).encode()
        elif from_files:
            value = _read_file(from_files[0], from_files[0])
        elif sys.stdin.isatty():
            value = _typed_value(name)
        else:
            value = sys.stdin.buffer.read()
        values = {name: value}
    changed = store.write_many(values, app.identities())
    for key, value in values.items():
        _say(f"{key}: {'stored' if changed[key] else 'unchanged'} ({len(value)} bytes)")


def _typed_value(name: str) -> bytes:
    """The value typed on a terminal, hidden, asked twice; an empty one is stored as from a
    pipe (empty); two that differ store nothing (one line, exit 1)."""
    first = click.prompt(f"value for {name}", hide_input=True, default="", show_default=False)
    again = click.prompt("again, to confirm", hide_input=True, default="", show_default=False)
    if first != again:
        raise DevsecretsError(
            "the two values typed do not match; nothing stored",
            hint=f"run `devsecrets set {name}` again, or pipe the value in",
        )
    return str(first).encode()


def _named_files(items: tuple[str, ...]) -> dict[str, bytes]:
    from devsecrets.store import validate_name

    values: dict[str, bytes] = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise click.UsageError(
                f"--from-file {item}: expected NAME=PATH (or give NAME as the argument)"
            )
        validate_name(key)
        if key in values:
            raise click.UsageError(f"--from-file: {key} is given twice")
        values[key] = _read_file(path, item)
    return values


def _read_file(path: str, given: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise click.UsageError(f"--from-file {given}: {path} is a directory") from None
    except OSError as e:
        raise click.UsageError(f"--from-file {given}: cannot read {path} ({e.strerror})") from None


@cli.command()
@click.argument("names", metavar="NAME...", nargs=-1, required=True, shell_complete=complete_secret)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object name -> value.")
@pass_app
def get(app: App, names: tuple[str, ...], as_json: bool) -> None:
    """Print a secret's raw bytes to stdout; several secrets at once with --json.

    With --json, prints one JSON object mapping each name to its value: a string when the
    value is UTF-8, else {"base64": "..."}. Reading many secrets in one call is much faster
    than calling get once per secret. If any name fails, nothing is printed.

    \b
    Examples:
      devsecrets get db_password
      devsecrets get --json db_password api_token | jq -r .api_token
    """
    from devsecrets.coredump import no_core_dumps
    from devsecrets.fastget import json_mapping

    no_core_dumps()
    if len(names) > 1 and not as_json:
        raise click.UsageError("several names need --json (raw values would run together)")
    store, identities = app.store(), app.identities()
    values = {name: store.read(name, identities).value for name in dict.fromkeys(names)}
    sys.stdout.buffer.write(json_mapping(values) if as_json else values[names[0]])
    sys.stdout.buffer.flush()


@cli.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def ls(app: App, as_json: bool) -> int:
    """List secrets: name, size, last change, recipients. Decrypts nothing.

    An entry that cannot be read is reported by name (and the exit code is 1); the others
    are still listed. Merge conflicts the git merge driver left are marked.
    """
    from devsecrets.gitdriver import conflicts, conflicts_problems

    store = app.store()
    infos, problems = store.listing()
    problems = [*problems, *conflicts_problems(store)]
    conflicted = set(conflicts(store))
    for problem in problems:
        click.echo(error_lines(problem), err=True, nl=False)
    if as_json:
        rows = [asdict(i) | {"conflict": i.name in conflicted} for i in infos]
        click.echo(json.dumps(rows, indent=2))
        return 1 if problems else 0
    if not infos and not problems:
        _say(f"no secrets in {store.root}; add one with `devsecrets set NAME`")
        return 0
    width = max((len(i.name) for i in infos), default=0)
    for info in infos:
        mark = (
            "  (keys differ from recipients.yaml: the next write repairs it; "
            "`devsecrets rekey` repairs all)"
            if info.stale
            else ""
        )
        if info.name in conflicted:
            how = "--ours|--theirs|--edit"
            mark += f"  (merge conflict: `devsecrets resolve {info.name} {how}`)"
        click.echo(
            f"{info.name:<{width}}  {info.size:>7} B  {info.lastmodified}  "
            f"{', '.join(info.recipients)}{mark}"
        )
    return 1 if problems else 0


@cli.command()
@click.argument("name", shell_complete=complete_secret)
@pass_app
def rm(app: App, name: str) -> None:
    """Remove a secret from the store.

    Any entry can be removed, even one with an invalid name (NAME or its file name
    NAME.sops.yaml) in the store directory: a file or symlink (never followed), a FIFO or
    socket (never opened), or an empty directory.
    """
    app.store().remove(name)
    _say(f"{name}: removed")


@cli.command()
@click.argument("name", shell_complete=complete_secret)
@click.option(
    "--allow-disk", is_flag=True, help="Allow the temporary plaintext copy on disk if no tmpfs."
)
@click.option(
    "--force", is_flag=True, help="Store even if the secret changed while the editor was open."
)
@pass_app
def edit(app: App, name: str, allow_disk: bool, force: bool) -> None:
    """Edit a secret in $VISUAL/$EDITOR; the plaintext copy lives only on tmpfs.

    Creates the secret if it does not exist. Saving unchanged content stores nothing. If the
    secret changed in the store meanwhile (a `set`, a `git pull`), nothing is stored unless
    --force.
    """
    _edit(app, name, allow_disk, force)


def _edit(app: App, name: str, allow_disk: bool, force: bool) -> None:
    from devsecrets.edit import edit_secret, editor_command
    from devsecrets.errors import ConcurrentChangeError
    from devsecrets.runtime_dir import private_root
    from devsecrets.tmpfs import is_memory_backed

    scratch = private_root(app.env, allow_disk=allow_disk, warn=_warn)
    if not is_memory_backed(scratch):
        _warn(f"--allow-disk: the plaintext copy goes to disk in {scratch}")
    store = app.store()
    _note(store.check_recipients())  # before the editor opens, so no edit is lost
    while True:
        try:
            changed = edit_secret(
                store,
                name,
                app.identities(),
                editor_command(app.env),
                scratch,
                confirm_empty=lambda: click.confirm(f"{name} is now empty; store an empty value?"),
                strip_newline=lambda: _strip_newline(name),
                force=force,
                create_near_miss=lambda guess: (
                    sys.stdin.isatty()
                    and click.confirm(
                        f"no secret {name!r}; did you mean {guess!r}? create {name!r}?", err=True
                    )
                ),
            )
            break
        except ConcurrentChangeError as e:  # on a terminal: offer to start over on the new value
            if not sys.stdin.isatty():
                raise
            _say(f"devsecrets: {e.message}")
            if not click.confirm("reopen the editor on the new value?", default=True, err=True):
                raise
    _say(f"{name}: {'stored' if changed else 'unchanged, nothing written'}")


def _strip_newline(name: str) -> bool:
    """Asked when the editor added a trailing newline the old value lacked."""
    if sys.stdin.isatty():
        return click.confirm(
            f"your editor added a trailing newline to {name}; strip it?", default=True, err=True
        )
    _say(
        f"note: your editor added a trailing newline to {name}; kept it "
        "(not a terminal; strip it by re-running on a terminal, or use `devsecrets set`)"
    )
    return False


@cli.group()
def recipients() -> None:
    """Who can read the store (age X25519 or ssh-ed25519 public keys)."""


@recipients.command("ls")
@pass_app
def recipients_ls(app: App) -> None:
    """List recipients: name and public key; then pending join requests."""
    from devsecrets.store.join import requests
    from devsecrets.store.trust import printable

    store = app.store()
    for member, key in store.recipients().items():
        click.echo(printable(f"{member}  {key}"))
    for request in requests(store):
        how = f"`devsecrets recipients add {request.name}`"
        click.echo(printable(f"{request.name}  {request.key}  (join request: {how})"))


@recipients.command("add")
@click.argument("member")
@click.argument("key", required=False)
@pass_app
def recipients_add(app: App, member: str, key: str | None) -> None:
    """Give MEMBER access: approve their join request, or add the public KEY given.

    Every secret's data key is re-wrapped for them, so they can read every secret. Check the
    key with them (in person, on a call) before approving a request: anyone who can push can
    write one.

    \b
    Examples:
      devsecrets recipients add carol
      devsecrets recipients add ci age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
    """
    from devsecrets.store.join import add_member

    store = app.store()
    _note(store.check_recipients())
    with _progress(len(store.names())) as progress:
        added = add_member(store, member, key, app.identities(), progress)
    how = "approved the join request of" if added.from_request else "added"
    _say(f"{how} {added.name} ({added.key})")
    _say(
        f"{added.name} can now read every secret in this store ({len(added.secrets)}): "
        f"{', '.join(added.secrets) or 'none yet'}; and every secret written from now on"
    )
    _say("next: commit and push .devsecrets/")


@recipients.command("rm")
@click.argument("member")
@pass_app
def recipients_rm(app: App, member: str) -> None:
    """Remove MEMBER and rotate every data key, so they cannot read anything written later.

    Values they could read before stay known to them: rotate those secrets at the source.
    """
    store = app.store()  # the store checks the approvals of those who stay
    with _progress(len(store.names())) as progress:
        touched = store.remove_recipient(member, app.identities(), progress)
    _say(f"removed {member}; rotated the data key of {touched} secret(s)")
    _say(f"{member} may have kept every value they could read before: change those at the source")


@recipients.command("approve")
@click.option("--yes", is_flag=True, help="Approve without asking (for scripts).")
@pass_app
def recipients_approve(app: App, yes: bool) -> None:
    """Approve the recipients in recipients.yaml as the people you encrypt to.

    Commands that encrypt (set, edit, rekey, recipients add/rm) refuse while recipients.yaml
    lists a key you have not approved, as when someone adds a recipient in a commit. Your
    approvals are kept on this machine (~/.config/devsecrets/approved/), never in the repo.
    """
    from devsecrets.store.trust import printable

    store = app.store()
    approvals = store.approvals or app.approvals(store.root)
    members = store.recipients()
    review = approvals.review(members)
    if not review.added:
        approvals.accept(members)
        _note(review)
        _say("nothing to approve: you have approved every recipient of this store")
        return
    heading = "recipients of this store" if review.first_use else "added since your last approval"
    _say(f"{heading}:")
    for change in review.added:
        line = f"  {change.name}  {change.key}  ({change.commit or 'git does not know'})"
        _say(printable(line))
    _note(review)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageProblem(
                "not on a terminal: nothing approved",
                hint="review the keys above, then `devsecrets recipients approve --yes`",
            )
        if not click.confirm("encrypt every secret to them from now on?", err=True):
            raise DevsecretsError("nothing approved")
    approvals.accept(members)
    _say(f"approved: {', '.join(c.name for c in review.added)}")


@cli.command()
@click.argument("name")
@click.option("--ours", "choice", flag_value="ours", help="Keep this branch's value.")
@click.option("--theirs", "choice", flag_value="theirs", help="Take the other branch's file.")
@click.option("--edit", "choice", flag_value="edit", help="Edit the value (starts from ours).")
@click.option("--allow-disk", is_flag=True, help="For --edit: allow the plaintext copy on disk.")
@pass_app
def resolve(app: App, name: str, choice: str | None, allow_disk: bool) -> None:
    """Settle a merge conflict the git merge driver left for NAME (`devsecrets ls` lists them).

    The file in the store is ours and valid; theirs waits in .devsecrets/.conflicts/.

    \b
    Examples:
      devsecrets resolve db_password --theirs
      devsecrets resolve db_password --edit
    """
    from devsecrets import gitdriver

    if choice is None:
        raise click.UsageError("choose one of --ours, --theirs, --edit")
    store = app.store()
    gitdriver.theirs_of(store, name)  # fails before anything else when there is no conflict
    if choice == "theirs":
        gitdriver.take_theirs(store, name)
    else:
        if choice == "edit":
            _edit(app, name, allow_disk, force=False)
        gitdriver.drop_conflict(store, name)
    _say(f"{name}: resolved ({choice}); next: git add {store.path_for(name)} and commit")


@cli.command("git-merge", hidden=True)
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("ours", type=click.Path(path_type=Path))
@click.argument("theirs", type=click.Path(path_type=Path))
@click.argument("path")
@pass_app
def git_merge(app: App, base: Path, ours: Path, theirs: Path, path: str) -> int:
    """The git merge driver (merge.devsecrets.driver): merges store files by meaning."""
    from devsecrets.gitdriver import merge

    merged = merge(base, ours, theirs, path, app.identities(), app.env)
    if merged.message:
        _say(merged.message)
    return 0 if merged.clean else 1


@cli.command("git-textconv", hidden=True)
@click.argument("file", type=click.Path(path_type=Path))
@pass_app
def git_textconv(app: App, file: Path) -> None:
    """The git diff textconv (diff.devsecrets.textconv): name, value hash, recipients."""
    from devsecrets.gitdriver import textconv

    click.echo(textconv(file, app.identities(), app.env, app.cwd), nl=False)


@cli.command()
@pass_app
def rekey(app: App) -> None:
    """Give every secret a fresh data key, wrapped for the current recipients."""
    store = app.store()
    _note(store.check_recipients())
    with _progress(len(store.names())) as progress:
        touched = store.rekey(app.identities(), progress)
    _say(f"rekeyed {touched} secret(s)")


# -- running the stack ------------------------------------------------------------------------

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


F = TypeVar("F", bound=Callable[..., Any])


def compose_options(command: F) -> F:
    """compose's global flags, accepted where compose accepts them, passed on unchanged."""
    options = [
        click.option(
            "-f",
            "--file",
            "-c",
            "--compose-file",
            "files",
            multiple=True,
            help="Compose/stack file (repeatable); -c as for `docker stack deploy -c`.",
        ),
        click.option("-p", "--project-name", help="Project name."),
        click.option(
            "--profile", "profiles", multiple=True, help="Profile to enable (repeatable)."
        ),
        click.option("--env-file", "env_files", multiple=True, help="Alternate env file."),
        click.option("--project-directory", help="Alternate working directory."),
        click.option(
            "--allow-disk", is_flag=True, help="Allow plaintext on disk when there is no tmpfs."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def engine_options(command: F) -> F:
    """Where the secrets live: this machine's tmpfs, or a tmpfs inside the Docker engine."""
    command = click.option(
        "--helper-image",
        metavar="IMAGE",
        help="Image of the engine mode's helper container (default: $DEVSECRETS_HELPER_IMAGE, "
        "else busybox:stable).",
    )(command)
    return click.option(
        "--engine-mode",
        type=click.Choice(["auto", "host", "engine"]),
        help="host: secrets on this machine's tmpfs, bound into the containers; engine: on a "
        "tmpfs volume inside the Docker engine (Docker Desktop, Colima, remote engines); "
        "auto (default, or $DEVSECRETS_ENGINE_MODE): host if the engine sees this machine's "
        "files.",
    )(command)


def _options(kwargs: Mapping[str, Any]) -> ComposeOptions:
    from devsecrets.compose import ComposeOptions

    return ComposeOptions(
        files=tuple(kwargs["files"]),
        project_name=kwargs["project_name"],
        profiles=tuple(kwargs["profiles"]),
        env_files=tuple(kwargs["env_files"]),
        project_directory=kwargs["project_directory"],
    )


def _speller(app: App, kwargs: Mapping[str, Any]) -> Callable[[str, str], str]:
    return speller(app, kwargs)


def _stack(app: App, kwargs: Mapping[str, Any]) -> StackContext:
    """Where a stack command runs: compose's flags and the engine options, parsed."""
    from devsecrets.stackops import StackContext, StackOptions

    options = StackOptions(
        compose=_options(kwargs),
        allow_disk=kwargs["allow_disk"],
        engine_mode=kwargs.get("engine_mode"),
        helper_image=kwargs.get("helper_image"),
    )
    return StackContext(options, app.cwd, app.env, app.store, app.identities)


def no_mask_option(command: F) -> F:
    return click.option(
        "--no-mask", is_flag=True, help="Show compose's output as is (no **** for values)."
    )(command)


def on_change_option(command: F) -> F:
    return click.option(
        "--on-change",
        multiple=True,
        metavar="SERVICE=POLICY",
        shell_complete=complete_on_change,
        help="What SERVICE does when one of its secrets changes: none (default), restart, "
        "or a signal such as SIGHUP. Overrides x-devsecrets in the stack file. Repeatable.",
    )(command)


@cli.command(context_settings=PASSTHROUGH)
@compose_options
@engine_options
@on_change_option
@click.option("--no-watch", is_flag=True, help="Do not follow store and stack changes.")
@no_mask_option
@click.argument("compose_args", nargs=-1, type=click.UNPROCESSED, shell_complete=complete_service)
@pass_app
def up(
    app: App,
    /,
    compose_args: tuple[str, ...],
    on_change: tuple[str, ...],
    no_watch: bool,
    no_mask: bool,
    **kwargs: Any,
) -> int:
    """docker compose up, with every secret mounted as Swarm would mount it.

    Each service sees exactly its secrets at /run/secrets/<target> (or its absolute target),
    read-only, from tmpfs, with the stack's uid/gid/mode. Every other argument goes to
    `docker compose up`. In the foreground it lasts while its services run (also after they
    were restarted), and the secrets are wiped at the end unless a container of the project
    still runs; with -d they stay until `devsecrets down`. Re-running `up` or `up -d` after a
    change works as re-running `docker stack deploy`: a running service whose secret sources
    changed (a new versioned name, target or grant) is recreated; a new value under the same
    name is swapped in place and its on-change policy applies.

    In the foreground, changes to the store (set, edit, git pull) and to the stack files reach
    the running containers at once: each file is replaced atomically. Per service, a change
    can also restart it or send it a signal: --on-change, or in the stack file
    `x-devsecrets: {on-change: {nginx: SIGHUP, worker: restart}}`.

    In the foreground, any current secret value in compose's output is shown as ****
    (values under 4 bytes are not masked; --no-mask shows compose's output unchanged).

    \b
    Examples:
      devsecrets up
      devsecrets up -d --build api
      devsecrets up -f docker-stack.yml -p shop
    """
    from devsecrets.live import parse_cli_policies
    from devsecrets.pipeline import UpOptions, bring_up

    options = UpOptions(
        compose=_options(kwargs),
        args=compose_args,
        policies=parse_cli_policies(on_change),  # bad input fails before anything is written
        watch=not no_watch,
        mask=not no_mask,
        allow_disk=kwargs["allow_disk"],
        engine_mode=kwargs["engine_mode"],
        helper_image=kwargs["helper_image"],
    )
    spell = _speller(app, kwargs)
    return bring_up(
        options, app.cwd, app.env, app.store, app.identities, say=_say, warn=_warn, spell=spell
    )


@cli.command(context_settings=PASSTHROUGH)
@compose_options
@engine_options
@no_mask_option
@click.argument("compose_args", nargs=-1, type=click.UNPROCESSED, shell_complete=complete_service)
@pass_app
def build(app: App, /, compose_args: tuple[str, ...], no_mask: bool, **kwargs: Any) -> int:
    """docker compose build, with build.secrets (RUN --mount=type=secret) from the store.

    Each build secret is a file on tmpfs that compose hands to BuildKit: never in an image
    layer, a build argument or the build cache. Prepares the stack as `up` does (every
    secret it uses must be in the store); wiped afterwards unless the stack is up.
    BuildKit does not rebuild when only a secret's value changed: add --no-cache for that.
    Build output is masked like `up`'s (--no-mask: as is).

    \b
    Examples:
      devsecrets build                 # every service with a build: section
      devsecrets build --no-cache api
      devsecrets up --build            # the same secrets when up builds
    """
    from devsecrets.stackops import build_stack

    return build_stack(_stack(app, kwargs), compose_args, mask=not no_mask, say=_say, warn=_warn)


@cli.command()
@compose_options
@engine_options
@on_change_option
@pass_app
def watch(app: App, /, on_change: tuple[str, ...], **kwargs: Any) -> int:
    """Follow store and stack changes for a stack started with `up -d`, until Ctrl-C.

    Each change to a secret replaces its files atomically in the running containers and prints
    one line: `db_password changed → api, worker (restarted: worker)`. A file that fails to
    decrypt keeps its last good value. Stopping the watch leaves the stack running.

    The project is found as compose finds it (-p, COMPOSE_PROJECT_NAME, the directory); if
    none of its containers runs, watch says so and decrypts nothing.
    """
    from devsecrets.live import parse_cli_policies
    from devsecrets.stackops import watch_stack

    policies = parse_cli_policies(on_change)
    spell = _speller(app, kwargs)
    return watch_stack(_stack(app, kwargs), policies, say=_say, warn=_warn, spell=spell)


@cli.command(context_settings=PASSTHROUGH)
@compose_options
@click.argument("compose_args", nargs=-1, type=click.UNPROCESSED)
@pass_app
def down(app: App, /, compose_args: tuple[str, ...], **kwargs: Any) -> int:
    """docker compose down, then wipe the project's secrets from tmpfs."""
    from devsecrets.pipeline import stop_stack

    allow_disk = kwargs["allow_disk"]
    return stop_stack(_options(kwargs), app.cwd, app.env, compose_args, allow_disk=allow_disk)


@cli.command()
@compose_options
@engine_options
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the override instead of its path.")
@click.option(
    "--check", is_flag=True, help="Also have compose check the stack with the override applied."
)
@pass_app
def render(app: App, /, to_stdout: bool, check: bool, **kwargs: Any) -> None:
    """Materialize the secrets and write the compose override; print its path.

    The override holds paths only. Use it with plain compose:
    docker compose -f stack.yml -f "$(devsecrets render)" up. The secrets stay on tmpfs until
    `devsecrets down`. compose checks the override itself when you use it; --check runs that
    check now (a second `docker compose config`).
    """
    from devsecrets.stackops import render_stack

    override = render_stack(_stack(app, kwargs), check=check, say=_say, warn=_warn)
    if to_stdout:
        click.echo(override.read_text(), nl=False)
    else:
        click.echo(str(override))


@cli.command("compose", context_settings={**PASSTHROUGH, "allow_interspersed_args": False})
@compose_options
@engine_options
@no_mask_option
@click.argument(
    "compose_args",
    nargs=-1,
    required=True,
    type=click.UNPROCESSED,
    shell_complete=complete_compose_args,
)
@pass_app
def compose_cmd(app: App, /, compose_args: tuple[str, ...], no_mask: bool, **kwargs: Any) -> int:
    """Any other docker compose command with the override applied (ps, logs, exec, restart…).

    devsecrets' own flags (-f, -p, --no-mask, …) go before the compose command:
    devsecrets compose -f stack.yml logs -f api. In `logs`, `up` and `build`, any secret
    value you can decrypt is shown as **** (values under 4 bytes are not masked); `build` is
    `devsecrets build`.

    `compose up` in the foreground wipes the secrets when compose exits, like `up --no-watch`;
    `compose up [-d]` over running containers applies what changed as `up` does.
    """
    from devsecrets.stackops import compose_passthrough

    stack = _stack(app, kwargs)
    return compose_passthrough(stack, compose_args, mask=not no_mask, say=_say, warn=_warn)


@cli.command(context_settings=PASSTHROUGH)
@click.option(
    "-c",
    "--compose-file",
    "files",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="Stack file (repeatable).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (create/reuse/prune); change nothing (still needs a swarm manager).",
)
@click.option("--prune-only", is_flag=True, help="Only remove unused versions; deploy nothing.")
@click.option(
    "--keep",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Also keep the N newest unused versions of each secret.",
)
@click.option(
    "--timeout",
    default=300,
    show_default=True,
    type=click.IntRange(1),
    help="Seconds to wait for the services to converge.",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask (required without a terminal).")
@click.argument(
    "stack_args", nargs=-1, required=True, type=click.UNPROCESSED, metavar="[FLAGS]... STACK"
)
@pass_app
def deploy(
    app: App,
    /,
    files: tuple[str, ...],
    dry_run: bool,
    prune_only: bool,
    keep: int,
    timeout: int,
    yes: bool,
    stack_args: tuple[str, ...],
) -> None:
    """docker stack deploy with each secret from the store as a versioned Swarm secret.

    Each secret the stack declares `external: true` and the store holds becomes a Swarm
    secret named <name>_<hash of its value>; the stack is deployed pointing at those names
    (same /run/secrets paths), Swarm rolls the services over, and versions no service uses
    any more are removed. Unchanged values create nothing. The stack files are not changed.
    STACK goes last; other `docker stack deploy` flags go before it.

    \b
    Examples:
      devsecrets deploy --dry-run -c docker-stack.yml shop
      devsecrets deploy -c docker-stack.yml -c prod.yml --yes shop
      devsecrets deploy -c docker-stack.yml --with-registry-auth shop
      devsecrets deploy -c docker-stack.yml --prune-only --keep 1 shop
    """
    from devsecrets.deploy import DeployOptions
    from devsecrets.deploy import deploy as run_deploy

    if stack_args[-1].startswith("-"):
        raise click.UsageError("the stack name goes last: devsecrets deploy -c FILE … STACK")
    options = DeployOptions(
        files, stack_args[-1], stack_args[:-1], keep, dry_run, prune_only, float(timeout)
    )
    done = run_deploy(
        options,
        app.cwd,
        app.env,
        app.store,
        app.identities,
        confirm=_confirm_deploy(yes),
        warn=_warn,
    )
    if dry_run:
        _say(f"plan for stack {options.stack} on {done.target.describe()}")
        for line in _plan_lines(done.plan, prune_only):
            click.echo(line)
        return
    for name in done.created:
        _say(f"created {name}")
    for name in done.pruned:
        _say(f"removed {name}")
    for name in done.not_pruned:
        _warn(f"{name} is unused by this stack but could not be removed")
    _say(f"stack {options.stack}: {len(done.plan.wanted)} secret(s) from the store")


def _confirm_deploy(yes: bool) -> Confirm:
    def confirm(target: Target, plan: Plan) -> bool:
        from devsecrets.errors import UsageProblem

        _say(f"changing the swarm at {target.describe()}")
        for line in _plan_lines(plan, False):
            _say(f"  {line}")
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageProblem(
                "not asking without a terminal", hint="pass --yes to change the swarm"
            )
        return click.confirm("Continue?", err=True)

    return confirm


def _plan_lines(plan: Plan, prune_only: bool) -> list[str]:
    """create / reuse / prune / keep / left: names and hashes, never values."""
    lines = [f"create  {w.name}  ({w.key}, hmac-sha256 {w.digest})" for w in plan.create]
    lines += [f"reuse   {w.name}  ({w.key}, hmac-sha256 {w.digest})" for w in plan.reuse]
    when = "" if prune_only else ", after the rollout"
    lines += [f"prune   {s.name}  (unused{when})" for s in plan.prune]
    lines += [f"keep    {s.name}  (unused, --keep)" for s in plan.keep]
    lines += [f"left    {line}  (docker stack deploy)" for line in plan.left]
    return lines or ["nothing to do"]


@cli.command("run", context_settings={"allow_interspersed_args": False})
@compose_options
@click.option(
    "--secret",
    "names",
    multiple=True,
    shell_complete=complete_secret,
    help="Only this secret (repeatable); no stack file needed.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def run_cmd(app: App, /, names: tuple[str, ...], command: tuple[str, ...], **kwargs: Any) -> int:
    """Run a command on the host with the stack's secrets as files, and *_FILE variables.

    Each secret the stack grants (or each --secret) is written to a private directory on
    tmpfs (0700, files 0400), and the command gets <NAME>_FILE with its path: db_password ->
    DB_PASSWORD_FILE. The directory is removed when the command exits; its exit code is
    devsecrets' exit code. For migrations, tests or an app run outside containers.

    \b
    Examples:
      devsecrets run -- ./manage.py migrate
      devsecrets run --secret db_password -- psql -f schema.sql
      devsecrets run -f docker-stack.yml -- npm test
    """
    from devsecrets.hostrun import run_with_secrets
    from devsecrets.process import plaintext_guard

    with plaintext_guard():  # no core file; a stop signal before the command runs wipes too
        return run_with_secrets(
            command,
            names,
            _options(kwargs),
            app.cwd,
            app.env,
            app.store,
            app.identities,
            allow_disk=kwargs["allow_disk"],
            say=_say,
            warn=_warn,
        )


@cli.command("check")
@compose_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--no-engine", is_flag=True, help="Skip the Docker engine and tmpfs checks (pre-commit)."
)
@pass_app
def check_cmd(app: App, /, as_json: bool, no_engine: bool, **kwargs: Any) -> int:
    """Check the project: exit 1 when anything is wrong, listing each problem.

    \b
    Finds: secrets the stack needs that the store lacks, and store entries it does not use;
    plaintext secret files tracked by git; a store value that also appears in plain text in
    the stack's environment:, in .env or in any file git tracks (compared by keyed hash,
    never shown; values under 4 bytes are not searched); store files you cannot decrypt;
    files whose keys do not match recipients.yaml; merge conflicts the git merge driver left
    (`devsecrets resolve`); no identity; no Docker engine, compose or tmpfs. Also says how
    `up` would run the stack, and warns (WARN, exit 0) about what `up` warns about: a secret
    read from a plaintext file, an environment secret or a volume under /run/secrets.

    \b
    Examples:
      devsecrets check
      devsecrets check --json | jq '.findings[].code'
      devsecrets check --no-engine      # as a pre-commit hook (.pre-commit-hooks.yaml)
    """
    from devsecrets.check import ERROR, Inputs, check

    inputs = Inputs(app.cwd, app.env, _options(kwargs), app.store, app.identities, not no_engine)
    report = check(inputs)
    if as_json:
        findings = [asdict(f) for f in report.findings]
        click.echo(json.dumps({"ok": report.ok, "findings": findings, "facts": report.facts}))
        return 0 if report.ok else 1
    for key, value in report.facts.items():
        click.echo(f"info  {key}: {value}")
    for finding in report.findings:
        label = "FAIL" if finding.level == ERROR else "WARN"
        click.echo(f"{label}  {finding.code}: {finding.message}")
        if finding.hint:
            click.echo(f"      hint: {finding.hint}")
    count = len(report.problems)
    warned = len(report.findings) - count
    click.echo(
        (f"{count} problem(s)" if count else "no problems found")
        + (f", {warned} warning(s)" if warned else "")
    )
    return 0 if report.ok else 1


@cli.command("import")
@compose_options
@click.option(
    "--env-key",
    "env_keys",
    multiple=True,
    metavar="KEY[=NAME]",
    help="Import KEY of the .env file as secret NAME (default: key in lower case). Repeatable.",
)
@click.option(
    "--dotenv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The .env file for --env-key (default: the project's .env).",
)
@click.option(
    "--sops",
    "sops_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A sops-encrypted file, one key per secret, decrypted by sops. Repeatable.",
)
@click.option("--delete", is_flag=True, help="Delete the imported plaintext files, no question.")
@click.option(
    "-y", "--yes", is_flag=True, help="Do not ask: delete the files and remove the .env lines."
)
@pass_app
def import_cmd(
    app: App,
    /,
    env_keys: tuple[str, ...],
    dotenv: Path | None,
    sops_files: tuple[Path, ...],
    delete: bool,
    yes: bool,
    **kwargs: Any,
) -> None:
    """Move plaintext secrets into the store: the stack's file: secrets, .env keys, sops files.

    Then offers to delete the plaintext files (--delete: without asking), adds them to
    .gitignore, and offers to remove the imported lines from .env (the rest of the file stays
    byte for byte; a key the stack still reads as ${KEY} stays). --yes: both, without asking.
    The stack keeps working: a store entry named like a file: secret wins.
    Reports each secret by name, never its value.

    \b
    Examples:
      devsecrets import                         # ./secrets/*.txt named in the stack
      devsecrets import --env-key DB_PASSWORD --env-key STRIPE_KEY=stripe_api_key
      devsecrets import --sops secrets.enc.yaml
      devsecrets import --yes                   # in a script: no question
    """
    from devsecrets import importer
    from devsecrets.errors import StackError

    sources: list[importer.Source] = []
    stack_error, project_dir = None, app.cwd
    stack_files: tuple[Path, ...] = ()
    try:
        project_dir, sources, stack_files = importer.stack_files(_options(kwargs), app.cwd, app.env)
    except StackError as e:
        stack_error = e
    env_file = dotenv or project_dir / ".env"
    if env_keys:
        sources += importer.dotenv_sources(env_file, env_keys)
    for path in sops_files:
        sources += importer.sops_sources(path, app.env)
    importer.require_some(sources, stack_error)
    for item in importer.import_sources(app.store(), app.identities(), sources):
        _say(f"{item.name}: {'imported' if item.changed else 'unchanged'} from {item.origin}")
    if env_keys:
        _remove_from_dotenv(env_file, importer.dotenv_keys(env_keys), stack_files, yes)
    plaintext = [s.plaintext for s in sources if s.plaintext is not None]
    if not plaintext:
        return
    for entry in importer.ignore_in_git(plaintext, project_dir):
        _say(f"added {entry} to .gitignore")
    shown = ", ".join(str(p) for p in plaintext)
    tracked = importer.tracked_in_git(plaintext, project_dir)
    if delete or yes or (sys.stdin.isatty() and click.confirm(f"delete {shown}?", err=True)):
        for path in importer.delete_plaintext(plaintext):
            _say(f"deleted {path}")
    else:
        them = "them" if len(plaintext) > 1 else "it"
        _say(f"kept {shown}; delete {them} yourself, or run again with --delete")
    for path in tracked:
        _say(
            f"{path} is tracked by git: `git rm --cached {path}` and commit; "
            "rotate the secret if it was ever pushed"
        )


def _remove_from_dotenv(
    env_file: Path, keys: list[str], stack_files: tuple[Path, ...], yes: bool
) -> None:
    """Offer to remove the imported keys from .env; keys the stack still reads stay."""
    from devsecrets import importer

    still = importer.still_read(keys, stack_files)
    for key, where in still.items():
        _say(f"kept {key} in {env_file.name}: {where} still reads ${{{key}}}")
    removable = [k for k in keys if k not in still]
    if not removable:
        return
    shown = ", ".join(removable)
    question = f"remove {shown} from {env_file}?"
    if yes or (sys.stdin.isatty() and click.confirm(question, err=True)):
        for key in importer.remove_dotenv_keys(env_file, removable):
            _say(f"removed {key} from {env_file.name}")
    else:
        them = "them" if len(removable) > 1 else "it"
        _say(f"kept {shown} in {env_file.name}; remove {them} yourself, or run again with --yes")


# -- plumbing --------------------------------------------------------------------------------


class _progress:
    """A progress bar on stderr when a command touches many files; silent otherwise."""

    def __init__(self, total: int) -> None:
        self.bar: ProgressBar[int] | None = None
        if total >= 20 and sys.stderr.isatty():
            self.bar = click.progressbar(length=total, label="re-encrypting", file=sys.stderr)

    def __enter__(self) -> Progress | None:
        bar = self.bar
        if bar is None:
            return None
        bar.__enter__()
        return lambda done, total: bar.update(1)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_say, _warn = say, warn  # click.echo(err=True) wrote the same bytes; app.py has no click


def _note(review: Review | None) -> None:
    """Report recipients removed since this user last wrote (they need no approval)."""
    for change in review.removed if review is not None else ():
        _say(f"note: no longer a recipient: {change.describe()}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the full CLI; `entry.guarded` maps what escapes to the exit-code table."""
    from devsecrets.entry import guarded

    debug = os.environ.get("DEVSECRETS_DEBUG") == "1" or "--debug" in (argv or sys.argv[1:])
    return guarded(lambda: _run_click(argv), debug=debug)


def _run_click(argv: list[str] | None) -> int:
    """click's own outcomes (usage errors, --help, --version, Abort) as exit codes."""
    if "_DEVSECRETS_COMPLETE" in os.environ:  # a shell asks for completions
        _use_our_fish()
    try:
        result = cli.main(args=argv, prog_name="devsecrets", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort as e:  # click's name for Ctrl-C or EOF at a prompt
        cause = e.__cause__  # a stop signal's Interrupted keeps its number (exit 128+N)
        raise (cause if isinstance(cause, KeyboardInterrupt) else KeyboardInterrupt()) from None
    return result if isinstance(result, int) else EXIT_OK
