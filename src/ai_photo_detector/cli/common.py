"""What every command shares: the error boundary, settings, progress, the console."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from ai_photo_detector.errors import (
    DetectorError,
    InputError,
    RegistryUnavailable,
    StoreUnavailable,
)
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.settings import Settings, load_settings

console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (else APD_CONFIG).")
]

KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--api-key-file", help="A file holding the API key (else APD_API_KEY / APD_API_KEY_FILE)."
    ),
]

# Exit codes of expected errors, first match wins: 1 for a refusal (the registry said no, an
# image could not be used), 2 for what must be fixed first (a bundle, a dataset, settings).
EXIT_CODES: tuple[tuple[type[DetectorError], int], ...] = (
    (RegistryUnavailable, 1),
    (InputError, 1),
    (DetectorError, 2),
)


class Commands(TyperGroup):
    """The command line's one error boundary: any expected error, whatever command raised it,
    becomes one clear line on stderr and an exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:  # a click context (typer vendors its own click)
        try:
            return super().invoke(ctx)
        except DetectorError as exc:
            console.print(f"[red]error ({exc.code}):[/red] ", end="")
            console.print(exc.message, markup=False, highlight=False, soft_wrap=True)
            code = next(code for kind, code in EXIT_CODES if isinstance(exc, kind))
            raise typer.Exit(code) from exc


def load(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]settings error:[/red] {exc}")
        raise typer.Exit(2) from exc


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:

        def factory(name: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(name, total=total)
            return lambda units: progress.advance(task, units)

        yield factory


def exit_on_gate_failures(failures: list[str]) -> None:
    for failure in failures:
        console.print(f"[red]quality gate failed:[/red] {failure}")
    if failures:
        raise typer.Exit(1)


def open_detector(model: str | None, settings: Settings) -> Any:
    from ai_photo_detector.model.bundle import load_bundle
    from ai_photo_detector.model.inference import OnnxDetector
    from ai_photo_detector.model.runtimes import requested_runtime

    bundle = load_bundle(model or settings.model)
    inference = settings.inference
    return OnnxDetector(
        bundle,
        inference.intra_op_threads,
        inference.inter_op_threads,
        runtime=requested_runtime(inference.runtime),
    )


@contextmanager
def store_errors() -> Iterator[None]:
    """A database that cannot be reached or lacks its tables, as one clear error."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        yield
    except (OperationalError, ProgrammingError) as exc:
        raise StoreUnavailable(
            f"the store cannot answer ({exc.orig}); `ai-photo-detector db upgrade` creates or "
            "migrates it"
        ) from exc


@contextmanager
def opened_store(settings: Settings, write: bool) -> Iterator[Store]:
    """The store of ``settings.database_url``, closed afterwards. Only commands that write
    migrate it; a read finding no tables says how to create them."""
    with store_errors():
        store = Store(settings.database_url, migrate=write)
        try:
            yield store
        finally:
            store.close()
