"""Person identifiers as agencies write them: PNC ID, CRO number, NHS number, date of birth, and
the names and postcode district probabilistic linkage compares.

Each ``parse_*`` takes the value as pushed and returns its one canonical form, or raises
``ValueError`` with a reason that never quotes the value (it is personal data).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import date

# The PNC check character: YYNNNNNNN modulo 23, 0 = Z, 1 = A ... 22 = Y without I, O and S.
PNC_CHECK = "ZABCDEFGHJKLMNPQRTUVWXY"
_PNC = re.compile(r"^(?:(\d{2})?(\d{2})/(\d{1,7})|(\d{3,11}))([A-Z])$")
_CRO = re.compile(r"^(\d{1,6})/(\d{2})([A-Z])$")
_DOB_DAY_FIRST = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})$")
_DOB_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?$")
_DOB_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def pnc_check_character(year: int, serial: int) -> str:
    """The check character of the PNC ID with this two-digit year and serial."""
    return PNC_CHECK[(year * 10_000_000 + serial) % 23]


def parse_pnc(value: str) -> str:
    """``2019/0123456A``, ``19/123456A``, ``19123456a``, ``19/42K`` → ``19/123456A`` form:
    two-digit year, slash, serial without leading zeros, check character."""
    text = value.strip().upper().replace(" ", "")
    match = _PNC.match(text)
    if match is None:
        raise ValueError(
            "is not a PNC ID (YY/NNNNNNND: a year, a serial of up to 7 digits, a check letter)"
        )
    century, year_text, serial_text, run, check = match.groups()
    if run is not None:  # run together: the century is there when the rest is too long
        century, run = (run[:2], run[2:]) if len(run) > 9 else (None, run)
        year_text, serial_text = run[:2], run[2:]
        if not 1 <= len(serial_text) <= 7:
            raise ValueError("is not a PNC ID: the serial has more than 7 digits")
    year, serial = int(year_text), int(serial_text)
    if century is not None and century not in ("19", "20"):
        raise ValueError("is not a PNC ID: the year is outside 1900-2099")
    if serial == 0:
        raise ValueError("is not a PNC ID: the serial is zero")
    if check != pnc_check_character(year, serial):
        raise ValueError("is not a valid PNC ID: the check character does not match")
    return f"{year:02d}/{serial}{check}"


def parse_cro(value: str) -> str:
    """``NNNNNN/YYD`` (serial of up to six digits, year, check letter) → zero-padded, upper."""
    match = _CRO.match(value.strip().upper().replace(" ", ""))
    if match is None:
        raise ValueError("is not a CRO number (NNNNNN/YYD)")
    serial, year, check = match.groups()
    if int(serial) == 0:
        raise ValueError("is not a CRO number: the serial is zero")
    return f"{int(serial):06d}/{year}{check}"


def nhs_check_digit(first_nine: str) -> int | None:
    """The modulus 11 check digit of nine digits; None where none exists (remainder 10)."""
    total = sum(
        int(digit) * weight for digit, weight in zip(first_nine, range(10, 1, -1), strict=True)
    )
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def parse_nhs(value: str) -> str:
    """Ten digits, spaces or hyphens allowed (``943 476 5919``), with a valid check digit."""
    digits = re.sub(r"[\s\-]", "", str(value))
    if not re.fullmatch(r"\d{10}", digits):
        raise ValueError("is not an NHS number (ten digits)")
    if nhs_check_digit(digits[:9]) != int(digits[9]):
        raise ValueError("is not a valid NHS number: the check digit does not match")
    return digits


def parse_date_of_birth(value: object, today: date | None = None) -> str:
    """``YYYY-MM-DD``, ``YYYYMMDD`` or day first (``05/01/1990``, ``5.1.1990``) → ISO; not in the
    future, not before 1900."""
    if not isinstance(value, str):
        raise ValueError("must be a date (YYYY-MM-DD or DD/MM/YYYY)")
    text = value.strip()
    parts: tuple[str, str, str] | None = None
    if match := _DOB_ISO.match(text):
        parts = (match.group(1), match.group(2), match.group(3))
    elif match := _DOB_COMPACT.match(text):
        parts = (match.group(1), match.group(2), match.group(3))
    elif match := _DOB_DAY_FIRST.match(text):
        parts = (match.group(3), match.group(2), match.group(1))
    if parts is None:
        raise ValueError("is not a date (YYYY-MM-DD or DD/MM/YYYY)")
    try:
        born = date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        raise ValueError("is not a valid date") from None
    if born.year < 1900:
        raise ValueError("is before 1900")
    if born > (today or date.today()):
        raise ValueError("is in the future")
    return born.isoformat()


# Parsers for the link kinds that have a written form to check; names and postcodes are checked
# by their field type and only normalised for comparison.
PARSERS: dict[str, Callable[[str], str]] = {
    "pnc": parse_pnc,
    "cro": parse_cro,
    "nhs": parse_nhs,
    "date_of_birth": parse_date_of_birth,
}

# Common English forename variants, both ways: a nickname compares equal to the full name.
_NICKNAMES = {
    "alex": "alexander",
    "andy": "andrew",
    "bill": "william",
    "billy": "william",
    "bob": "robert",
    "bobby": "robert",
    "chris": "christopher",
    "dan": "daniel",
    "danny": "daniel",
    "dave": "david",
    "jim": "james",
    "jimmy": "james",
    "joe": "joseph",
    "jon": "jonathan",
    "kate": "katherine",
    "katie": "katherine",
    "kathy": "katherine",
    "liz": "elizabeth",
    "beth": "elizabeth",
    "matt": "matthew",
    "mick": "michael",
    "mike": "michael",
    "nick": "nicholas",
    "pete": "peter",
    "rob": "robert",
    "sam": "samuel",
    "steve": "stephen",
    "sue": "susan",
    "tom": "thomas",
    "tommy": "thomas",
    "tony": "anthony",
    "vicky": "victoria",
    "will": "william",
    "jen": "jennifer",
    "jenny": "jennifer",
    "becky": "rebecca",
    "debbie": "deborah",
    "nat": "natalie",
    "gaz": "gary",
    "baz": "barry",
    "del": "derek",
    "kev": "kevin",
    "shaz": "sharon",
    "terry": "terence",
    "ron": "ronald",
    "ken": "kenneth",
}


def normalise_name(value: str) -> str:
    """Case, accents, hyphens, apostrophes and spaces folded: ``O'Neil-Smith`` → ``oneilsmith``."""
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z]", "", folded)


def first_forename(value: str) -> str:
    """The first forename, normalised, with a known nickname read as its full name."""
    words = re.split(r"[\s\-]+", value.strip())
    first = normalise_name(words[0]) if words else ""
    return _NICKNAMES.get(first, first)


def postcode_district(postcode: str) -> str:
    """The outward code of a normalised postcode (``M14 5AB`` → ``M14``)."""
    return postcode.split(" ", 1)[0].upper()
