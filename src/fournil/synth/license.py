"""The license of a synthetic sample: the most restrictive of its seed documents' licenses.

A sample quotes or paraphrases its seeds, so it inherits their terms: any share-alike seed
makes it CC-BY-SA-4.0; else any attribution seed makes it CC-BY-4.0; else Etalab (Licence
Ouverte, attribution too); else a permissive code license; public domain and CC0 seeds give
public domain (CC0 when all are CC0). A seed license outside these families (NC, ND,
unknown, GPL, ...) is passed on as is, so the recipe's license policy rejects the sample
with the usual reason (`license:nc`, `license:unknown`).
"""

from __future__ import annotations

from collections.abc import Iterable

from fournil.provenance.licenses import ETALAB_1, ETALAB_2, PUBLIC_DOMAIN, UNKNOWN

CODE_PERMISSIVE = ("MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "Unlicense")


def _family(spdx: str) -> str:
    if spdx in (PUBLIC_DOMAIN, "CC0-1.0", "CC-PDDC"):
        return "pd"
    if spdx in (ETALAB_1, ETALAB_2):
        return "etalab"
    if spdx in CODE_PERMISSIVE:
        return "code"
    if spdx.startswith("CC-BY-SA-"):
        return "by-sa"
    if spdx.startswith("CC-BY-") and spdx[len("CC-BY-"):][:1].isdigit():
        return "by"
    return "other"


def derive_license(licenses: Iterable[str]) -> str:
    """The SPDX id a sample grounded in seeds under `licenses` is released under."""
    licenses = sorted(set(licenses))
    if not licenses:
        return UNKNOWN
    families = {lic: _family(lic) for lic in licenses}
    others = [lic for lic, fam in families.items() if fam == "other"]
    if others:
        return UNKNOWN if UNKNOWN in others else others[0]
    present = set(families.values())
    if "by-sa" in present:
        return "CC-BY-SA-4.0"
    if "by" in present:
        return "CC-BY-4.0"
    if "etalab" in present:
        return ETALAB_2 if ETALAB_2 in licenses else ETALAB_1
    if "code" in present:
        return next(lic for lic in licenses if families[lic] == "code")
    return "CC0-1.0" if licenses == ["CC0-1.0"] else PUBLIC_DOMAIN
