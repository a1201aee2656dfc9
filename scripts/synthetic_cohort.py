"""A seeded synthetic PPO / IOM cohort, as three agencies would push it, with the true person of
every record: for linkage tests, the linkage benchmark and demonstrations. Every person, name,
identifier and date is made up here.

- probation pushes `offender-cohort` (the PPO strand and an IOM strand, PNC ID in varied written
  forms, names, date of birth, home postcode) and `oasys-assessment` (needs 0|1|2, PNC ID, names
  with the odd typo);
- police push `offender-offence` identified by the PNC ID, written in every form, with the name
  and date of birth as the police hold them;
- the drug service pushes `drug-treatment` episodes identified only by name, date of birth and
  postcode, with realistic errors: surname typos (12 %), upper case, nicknames, day and month
  transposed — for cohort members and for people the other agencies never saw.

``python -m scripts.synthetic_cohort --people 3000 --out DIR`` writes one CSV per dataset and
``truth.csv`` (dataset, source_ref, person).
"""

from __future__ import annotations

import argparse
import csv
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from shared.identifiers import nhs_check_digit, pnc_check_character

SURNAMES = (
    "Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson Evans "
    "Walker White Roberts Green Hall Wood Jackson Clarke Patel Khan Lewis James Phillips Mason "
    "Mitchell Rose Davis Rodriguez Cox Alexander Morgan Moore Martin Price Lee Harris Bell "
    "Cooper Ward Turner Hill Hughes Edwards Parker Collins Stewart Morris Murphy Cook Rogers "
    "Begum Ali Hussain Ahmed Shah Kaur Singh Mahmood Iqbal Akhtar Nowak Kowalski Wisniewski "
    "Baker Carter Shaw Lloyd Bennett Ellis Griffiths Richardson Fox Chapman Harvey Mills Webb "
    "Kelly Gray Marshall Owen Fisher Barker Russell Holmes Hunt Palmer Lawrence Knight Butler "
    "Simpson Dixon Hayes Reid Graham Kennedy Grant Watson Hamilton Mcdonald Fletcher Gibson "
    "O'Brien O'Neill Smith-Jones Wood-Ward Pryce Gallagher Doherty Quinn Burke Walsh Byrne"
).split()
FORENAMES = (
    "Robert William James Thomas Michael David Daniel Christopher Matthew Andrew Joseph Samuel "
    "Anthony Stephen Peter Nicholas Alexander Jonathan Kevin Gary Barry Derek Terence Ronald "
    "Kenneth Elizabeth Katherine Susan Jennifer Rebecca Deborah Victoria Natalie Sharon Sarah "
    "Emma Claire Karen Lisa Aisha Fatima Mohammed Imran Tariq Jamal Kamil Piotr Agnieszka "
    "Liam Connor Ryan Jordan Kyle Dean Wayne Craig Lee Shane Jade Chloe Megan Leanne Kirsty"
).split()
NICKNAMES = {
    "Robert": "Bob",
    "William": "Bill",
    "James": "Jim",
    "Thomas": "Tom",
    "Michael": "Mike",
    "David": "Dave",
    "Daniel": "Danny",
    "Christopher": "Chris",
    "Matthew": "Matt",
    "Andrew": "Andy",
    "Joseph": "Joe",
    "Samuel": "Sam",
    "Anthony": "Tony",
    "Stephen": "Steve",
    "Peter": "Pete",
    "Nicholas": "Nick",
    "Alexander": "Alex",
    "Elizabeth": "Liz",
    "Katherine": "Kate",
    "Susan": "Sue",
    "Jennifer": "Jenny",
    "Rebecca": "Becky",
    "Deborah": "Debbie",
    "Victoria": "Vicky",
    "Kevin": "Kev",
    "Gary": "Gaz",
}
OFFENCE_GROUPS = (
    "Burglary",
    "Robbery",
    "Theft and handling",
    "Vehicle offences",
    "Violence against the person",
    "Drug offences",
    "Criminal damage",
    "Public order",
)
OUTCOMES = ("Charged", "Cautioned", "Convicted", "No further action", "Community resolution")
SUBSTANCES = ("Opiates", "Crack cocaine", "Cocaine", "Cannabis", "Alcohol", "Benzodiazepines")
NEEDS = (
    "accommodation",
    "education_training_employability",
    "finance",
    "relationships",
    "lifestyle",
    "drug_misuse",
    "alcohol_misuse",
    "emotional_wellbeing",
    "thinking_behaviour",
    "attitudes",
)
DATASETS = ("offender-cohort", "offender-offence", "oasys-assessment", "drug-treatment")


@dataclass
class SyntheticPerson:
    index: int
    surname: str
    forename: str
    born: date
    postcode: str
    pnc: tuple[int, int] | None
    nhs: str | None


@dataclass
class SyntheticCohort:
    people: list[SyntheticPerson]
    records: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {name: [] for name in DATASETS}
    )
    truth: dict[tuple[str, str], int] = field(default_factory=dict)
    """(dataset, source_ref) → the index of the true person."""
    strand: dict[int, str] = field(default_factory=dict)
    """person index → the cohort strand (PPO, IOM) of the cohort members."""

    def add(self, dataset: str, person: SyntheticPerson, record: dict[str, Any]) -> None:
        """A record of ``dataset`` about ``person``, under the next reference of the dataset."""
        ref = f"{dataset[:3].upper()}-{len(self.records[dataset]) + 1}"
        self.records[dataset].append({"source_ref": ref, **record})
        self.truth[(dataset, ref)] = person.index


def _nhs(rng: random.Random) -> str:
    while True:
        first = f"{rng.randint(400_000_000, 999_999_999)}"
        check = nhs_check_digit(first)
        if check is not None:
            return first + str(check)


def written_pnc(rng: random.Random, year: int, serial: int) -> str:
    """One of the ways PNC IDs are written: with or without century, slash, padding, case."""
    check = pnc_check_character(year, serial)
    century = "19" if year > 30 else "20"
    forms = (
        f"{year:02d}/{serial}{check}",
        f"{century}{year:02d}/{serial:07d}{check}",
        f"{year:02d}/{serial:07d}{check}",
        f"{year:02d}{serial:07d}{check}".lower(),
        f"{century}{year:02d}/{serial}{check}",
    )
    return rng.choice(forms)


def _typo(rng: random.Random, name: str) -> str:
    letters = list(name)
    position = rng.randrange(1, len(letters)) if len(letters) > 1 else 0
    kind = rng.random()
    if kind < 0.4:
        letters[position] = rng.choice("aeiourstnlm")
    elif kind < 0.7 and len(letters) > 3:
        del letters[position]
    elif position < len(letters) - 1:
        letters[position], letters[position + 1] = letters[position + 1], letters[position]
    else:
        letters.insert(position, letters[position - 1])
    return "".join(letters)


def _as_recorded(rng: random.Random, person: SyntheticPerson, typo_rate: float) -> dict[str, str]:
    """How a treatment service writes a person down: typos, case, nicknames, swapped dates."""
    surname = person.surname
    if rng.random() < typo_rate:
        surname = _typo(rng, surname)
    if rng.random() < 0.05:
        surname = surname.replace("-", " ").replace("'", "")
    forename = person.forename
    if rng.random() < 0.15 and forename in NICKNAMES:
        forename = NICKNAMES[forename]
    if rng.random() < 0.3:
        surname, forename = surname.upper(), forename.upper()
    born = person.born
    if rng.random() < 0.05 and born.day <= 12 and born.day != born.month:
        born = date(born.year, born.day, born.month)
    written = born.isoformat() if rng.random() < 0.6 else born.strftime("%d/%m/%Y")
    return {"surname": surname, "forenames": forename, "date_of_birth": written}


def generate(
    people: int = 3000,
    cohort: int = 300,
    seed: int = 2024,
    typo_rate: float = 0.12,
    treated_outside: float = 0.2,
) -> SyntheticCohort:
    """``people`` people of whom ``cohort`` join the PPO strand (and half as many the IOM
    strand); offences, assessments and treatment episodes with the true person of each."""
    rng = random.Random(seed)
    population = _population(rng, people)
    offenders = [p for p in population if p.pnc is not None]
    members = rng.sample(offenders, min(len(offenders), cohort + cohort // 2))
    result = SyntheticCohort(people=population)
    # The draws come in this order, so a seed always makes the same cohort.
    _add_cohort(rng, result, members, cohort, typo_rate)
    _add_offences(rng, result, offenders)
    _add_treatment(rng, result, members, treated_outside, typo_rate)
    return result


def _population(rng: random.Random, people: int) -> list[SyntheticPerson]:
    """``people`` distinct people (name and date of birth); six in ten with a PNC ID."""
    population: list[SyntheticPerson] = []
    used: set[tuple[str, str, date]] = set()
    serials: set[tuple[int, int]] = set()
    while len(population) < people:
        surname, forename = rng.choice(SURNAMES), rng.choice(FORENAMES)
        born = date(1965, 1, 1) + timedelta(days=rng.randrange(40 * 365))
        if (surname, forename, born) in used:
            continue
        used.add((surname, forename, born))
        pnc = None
        if rng.random() < 0.6:
            while pnc is None or pnc in serials:
                pnc = (
                    rng.randint(0, 23) if rng.random() < 0.7 else rng.randint(85, 99),
                    rng.randint(1, 999_999),
                )
            serials.add(pnc)
        district = f"M{rng.randint(1, 40)}"
        postcode = f"{district} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}" + (
            rng.choice("ABDEFGHJLNPQRSTUWXYZ")
        )
        population.append(
            SyntheticPerson(len(population), surname, forename, born, postcode, pnc, _nhs(rng))
        )
    return population


def _add_cohort(
    rng: random.Random,
    result: SyntheticCohort,
    members: list[SyntheticPerson],
    cohort: int,
    typo_rate: float,
) -> None:
    """Probation's records: each member's cohort entry (the first ``cohort`` PPO, the rest IOM)
    and one or two assessments."""
    for number, person in enumerate(members):
        assert person.pnc is not None
        strand = "PPO" if number < cohort else "IOM"
        result.strand[person.index] = strand
        joined = date(2023, 1, 1) + timedelta(days=rng.randrange(365))
        left = joined + timedelta(days=rng.randrange(180, 720)) if rng.random() < 0.3 else None
        result.add(
            "offender-cohort",
            person,
            {
                "occurred_at": joined.isoformat(),
                "occurred_to": left.isoformat() if left else "",
                "category": strand,
                "pnc_id": written_pnc(rng, *person.pnc),
                "surname": person.surname,
                "forenames": person.forename,
                "date_of_birth": person.born.isoformat(),
                "home_postcode": person.postcode,
                "risk_level": rng.choice(("low", "medium", "high")),
            },
        )
        for _ in range(rng.randint(1, 2)):
            assessed = joined + timedelta(days=rng.randrange(-60, 300))
            recorded = _as_recorded(rng, person, typo_rate / 3)
            result.add(
                "oasys-assessment",
                person,
                {
                    "occurred_at": assessed.isoformat(),
                    "category": rng.choice(("initial", "review")),
                    "pnc_id": written_pnc(rng, *person.pnc),
                    **recorded,
                    "postcode": person.postcode,
                    **{need: rng.choice((0, 1, 1, 2)) for need in NEEDS},
                },
            )


def _add_offences(
    rng: random.Random, result: SyntheticCohort, offenders: list[SyntheticPerson]
) -> None:
    """The police's offences: two to eight per cohort member, up to two per other offender."""
    for person in offenders:
        assert person.pnc is not None
        count = rng.randint(2, 8) if person.index in result.strand else rng.randint(0, 2)
        for _ in range(count):
            when = date(2022, 1, 1) + timedelta(days=rng.randrange(3 * 365))
            result.add(
                "offender-offence",
                person,
                {
                    "occurred_at": when.isoformat(),
                    "category": rng.choice(OFFENCE_GROUPS),
                    "pnc_id": written_pnc(rng, *person.pnc),
                    "surname": person.surname,
                    "forenames": person.forename,
                    "date_of_birth": person.born.isoformat(),
                    "outcome": rng.choice(OUTCOMES),
                },
            )


def _add_treatment(
    rng: random.Random,
    result: SyntheticCohort,
    members: list[SyntheticPerson],
    treated_outside: float,
    typo_rate: float,
) -> None:
    """The drug service's episodes, of some members and of people no other agency saw, written
    down as the service does (``_as_recorded``)."""
    treated = [p for p in members if rng.random() < 0.45]
    others = [p for p in result.people if p.index not in result.strand]
    treated += rng.sample(others, int(len(others) * treated_outside))
    for person in treated:
        for _ in range(rng.randint(1, 3)):
            started = date(2022, 6, 1) + timedelta(days=rng.randrange(900))
            result.add(
                "drug-treatment",
                person,
                {
                    "occurred_at": started.isoformat(),
                    "category": rng.choice(("referral", "start", "exit")),
                    "substance": rng.choice(SUBSTANCES),
                    **_as_recorded(rng, person, typo_rate),
                    "postcode": person.postcode,
                },
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--cohort", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    made = generate(args.people, args.cohort, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for dataset, rows in made.records.items():
        names = list(dict.fromkeys(k for row in rows for k in row))
        with (args.out / f"{dataset}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, names)
            writer.writeheader()
            writer.writerows(rows)
    with (args.out / "truth.csv").open("w", newline="") as handle:
        truth = csv.writer(handle)
        truth.writerow(["dataset", "source_ref", "person"])
        truth.writerows((d, ref, p) for (d, ref), p in sorted(made.truth.items()))
    print({dataset: len(rows) for dataset, rows in made.records.items()})


if __name__ == "__main__":
    main()
