"""PII scrubbing: e-mail addresses, phone numbers, IBANs and IP addresses become placeholders.

Precision first: heritage and administrative text is full of numbers that look a little like
these (dates 12.03.1874, years, verse and page numbers, prices, article numbers 1.2.3), and a
false hit corrupts a real document. So:
- French phones need the 0X + four pairs shape with one consistent separator, or +33/0033;
  other countries need a leading + or 00 and 8-15 digits (E.164);
- an IBAN must pass its mod-97 checksum and have its country's length;
- an IPv4 address needs four octets <= 255 without leading zeros and not all one digit
  (section numbers 1.2.3.4); an IPv6 candidate must parse as one.
Cheap pre-checks (`@`, `::`, a run of digits) skip the regexes on text that cannot match.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "iban": "<IBAN>", "ip": "<IP>"}

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")
# digits with separators, long enough to be a phone, an IBAN or an IPv4 address
_MAYBE_NUMBER = re.compile(r"\d[\d \t.()/-]{5,}\d")

_FR_PHONE = re.compile(
    r"(?<![\w+.,])(?:"
    r"0[1-9](?P<sep>[ .-]?)\d\d(?:(?P=sep)\d\d){3}"  # 01 23 45 67 89, 01.23.45.67.89
    r"|(?:\+|00)33[ .-]?(?:\(0\)[ .-]?)?[1-9](?P<sep2>[ .-]?)\d\d(?:(?P=sep2)\d\d){3}"
    r")(?![\w]|[.,]\d)")
_INTL_PHONE = re.compile(
    r"(?<![\w+])(?:\+|\b00)[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}(?![\w]|[.,]\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")

# IBAN lengths for the countries a French corpus meets most (others: the generic 15-34)
_IBAN_LENGTHS = {"FR": 27, "MC": 27, "BE": 16, "CH": 21, "LU": 20, "DE": 22, "ES": 24,
                 "IT": 27, "NL": 18, "GB": 22, "PT": 25, "AT": 20, "IE": 22}


def iban_ok(candidate: str) -> bool:
    """Does `candidate` (spaces allowed) have a valid IBAN length and mod-97 checksum?"""
    iban = candidate.replace(" ", "")
    expected = _IBAN_LENGTHS.get(iban[:2])
    if (expected and len(iban) != expected) or not 15 <= len(iban) <= 34:
        return False
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def _intl_phone_ok(candidate: str) -> bool:
    return 8 <= sum(c.isdigit() for c in candidate) <= 15


def _ipv4_ok(candidate: str) -> bool:
    return any(len(octet) > 1 for octet in candidate.split("."))


def _ipv6_ok(candidate: str) -> bool:
    if sum(c.isalnum() for c in candidate) < 2:  # "::", "1::" read as text, not addresses
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _replace(pattern: re.Pattern, text: str, kind: str, counts: dict[str, int],
             valid: Callable[[str], bool] | None = None) -> str:
    placeholder = PLACEHOLDERS[kind]

    def sub(match: re.Match) -> str:
        if valid is not None and not valid(match.group()):
            return match.group()
        counts[kind] += 1
        return placeholder

    return pattern.sub(sub, text)


def scrub_pii(text: str) -> tuple[str, dict[str, int]]:
    """`text` with PII replaced by placeholders, and the number of replacements per kind."""
    counts = dict.fromkeys(PLACEHOLDERS, 0)
    if "@" in text:
        text = _replace(_EMAIL, text, "email", counts)
    if _MAYBE_NUMBER.search(text):
        text = _replace(_IBAN, text, "iban", counts, iban_ok)
        text = _replace(_FR_PHONE, text, "phone", counts)
        text = _replace(_INTL_PHONE, text, "phone", counts, _intl_phone_ok)
        text = _replace(_IPV4, text, "ip", counts, _ipv4_ok)
    if "::" in text or text.count(":") >= 7:
        text = _replace(_IPV6, text, "ip", counts, _ipv6_ok)
    return text, counts
