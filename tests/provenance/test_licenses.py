import pytest

from fournil.provenance.licenses import DEFAULT_ALLOWED, check_license, normalize_license


@pytest.mark.parametrize("raw, spdx", [
    ("CC BY-NC-SA 4.0", "CC-BY-NC-SA-4.0"),
    ("cc-by-nc", "CC-BY-NC-4.0"),
    ("Attribution-NonCommercial 4.0 International", "CC-BY-NC-4.0"),
    ("Attribution-NoDerivatives 4.0 International", "CC-BY-ND-4.0"),
    ("Paternité - Pas d'Utilisation Commerciale 3.0", "CC-BY-NC-3.0"),
    ("https://creativecommons.org/licenses/by-sa/4.0/", "CC-BY-SA-4.0"),
    ("Creative Commons Attribution-ShareAlike 3.0 Unported", "CC-BY-SA-3.0"),
    ("CC-BY-SA-4.0", "CC-BY-SA-4.0"),
    ("CC BY 4.0", "CC-BY-4.0"),
    ("CC0", "CC0-1.0"),
    ("https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
    ("Licence Ouverte v2.0", "LicenseRef-Etalab-2.0"),
    ("Licence Ouverte / Open Licence 1.0", "LicenseRef-Etalab-1.0"),
    ("etalab-2.0", "LicenseRef-Etalab-2.0"),
    ("domaine public", "LicenseRef-PublicDomain"),
    ("Public Domain", "LicenseRef-PublicDomain"),
    ("publicdomain", "LicenseRef-PublicDomain"),
    ("MIT", "MIT"),
    ("Apache License 2.0", "Apache-2.0"),
    ("All rights reserved", "LicenseRef-Proprietary"),
    ("", "LicenseRef-Unknown"),
    (None, "LicenseRef-Unknown"),
    ("see website", "LicenseRef-Unknown"),
    ("LicenseRef-Etalab-2.0", "LicenseRef-Etalab-2.0"),
])
def test_normalize_license(raw, spdx):
    assert normalize_license(raw) == spdx


@pytest.mark.parametrize("raw, reason", [
    ("CC BY-NC-SA 4.0", "license:nc"),
    ("Attribution-NonCommercial", "license:nc"),
    ("CC BY-ND 4.0", "license:nd"),
    ("whatever this is", "license:unknown"),
    ("All rights reserved", "license:proprietary"),
    ("GPL-3.0", "license:not_allowed"),
    ("CC BY-SA 4.0", None),
    ("domaine public", None),
    ("Licence Ouverte 2.0", None),
    ("CC0", None),
])
def test_default_gate(raw, reason):
    assert check_license(normalize_license(raw), DEFAULT_ALLOWED) == reason


def test_policy_can_be_narrowed():
    assert check_license("CC-BY-SA-4.0", ["LicenseRef-PublicDomain"]) == "license:not_allowed"
    assert check_license("LicenseRef-PublicDomain", ["LicenseRef-PublicDomain"]) is None
