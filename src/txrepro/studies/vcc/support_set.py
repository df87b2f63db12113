"""The STATE competition support set (competition_support_set.zip): verified, then its gene features read.

The zip's sha256 is in assets/data_manifest.tsv (row vcc / competition_support_set; a third
party's, for the copy re-uploaded on 16 Nov 2025). It is checked every time the zip is read,
before anything is taken out of it. What the study needs from it is `ESM2_pert_features.pt`
(one ESM2 vector per gene): STATE's perturbation embedding for genes it never saw in training,
and the features of the `*_features` regression alternatives.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from txrepro.errors import InputError
from txrepro.io.atomic import atomic_path
from txrepro.io.checksum import verify_checksum
from txrepro.io.manifest import manifest_entry
from txrepro.runtime import get_logger

log = get_logger(__name__)

MANIFEST_ID = "competition_support_set"
FEATURES_MEMBER = "ESM2_pert_features.pt"


def support_set_features(zip_path: str | Path, outdir: str | Path, *, manifest: Path | None = None) -> Path:
    """Verify the zip against its manifest checksum, then extract ESM2_pert_features.pt into `outdir`."""
    z = Path(zip_path)
    entry = manifest_entry("vcc", MANIFEST_ID, manifest)
    if entry is None or not entry.checksum:
        raise InputError("assets/data_manifest.tsv", f"vcc/{MANIFEST_ID}", "a checksum row for the STATE support set", "none")
    if not z.is_file():
        raise InputError(z, "STATE support set (vcc_support_set)", f"an existing {entry.file}", "nothing at this path")
    log.info("verifying %s against the manifest (%s) ...", z.name, entry.checksum.split(":")[0])
    verify_checksum(z, entry.checksum)  # ChecksumError: one line naming the file
    try:
        with zipfile.ZipFile(z) as archive:
            members = [m for m in archive.namelist() if Path(m).name == FEATURES_MEMBER and not m.startswith("__MACOSX")]
            if len(members) != 1:
                raise InputError(z, FEATURES_MEMBER, "exactly one ESM2_pert_features.pt in the support set", f"{len(members)}")
            out = Path(outdir) / FEATURES_MEMBER
            with archive.open(members[0]) as src, atomic_path(out) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile:
        raise InputError(z, "STATE support set (vcc_support_set)", "a zip archive", "not a zip file") from None
    log.info("STATE support set: %s extracted to %s", members[0], out)
    return out
