"""The source-data contract: one schema per delivered source, readable by a data officer.

Every later stage relies on these names. A delivery is a folder holding `delivery.json`
(which system sent it and the date it was delivered: the date its rows *became known*) and one
or more CSV files, each named after a source below (`dmc_census.csv`, `attendance.csv`, ...).
Every row also carries the date it *describes* (the source's `describes` column), so later stages
can build features only from what was known at a scoring round's as-of date.

The contract is enforced by ingestion (`features.ingest`), which turns each column's rules into
set-based SQL; `ews contract` prints the same tables as Markdown (see CONTRACT.md).

Each column also declares its `role` in the row, which decides what an invalid value costs: a row
must say WHO (the child) and WHERE/WHEN (school, grade, the date it describes) and carry WHAT it
exists to report; a row that cannot is quarantined. A DETAIL beside those (a room number, a home
tambon, a disability code) that is invalid is set to NULL, the row is kept and the repair is
logged: one bad field must not make a pupil who stayed vanish from a census.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from features.ids import GRADES

if TYPE_CHECKING:
    from features.calendar import SchoolCalendar

Kind = Literal[
    "text",  # free Thai/English text, UTF-8
    "int",  # whole number, optional min/max
    "float",  # decimal number, optional min/max
    "date",  # YYYY-MM-DD; a Buddhist-Era year (25xx) is repaired to CE and logged
    "year_month",  # YYYY-MM (CE; BE repaired and logged)
    "be_year",  # academic year in the Buddhist Era, e.g. 2568; a CE year is repaired and logged
    "enum",  # one of `allowed`
    "flag",  # 0 or 1
    "student_id",  # 13-digit citizen ID (check digit) or G-code; may be missing where allowed
    "school_code",  # 10 digits, must be in the school registry
    "tambon_code",  # 6 digits, must be in the area registry
    "grade",  # K1-K3, P1-P6, M1-M6
    "round_id",  # a scoring round, e.g. 2568-T1-early (the schools' assignment: ACTION_SOURCES)
]

# What a column is for in its row; it decides what an invalid (or missing required) value costs.
Role = Literal[
    "who",  # says who the child is (names, student number): invalid → row quarantined
    "who_id",  # the student ID: of absurd form → NULL (as if missing) when the row names the child
    #            another way (first and last name, or student number at the school), else quarantined
    "who_backup",  # helps say who when the ID cannot (birth date, sex): invalid → NULL when the
    #                row's ID is a valid citizen ID or G-code, else row quarantined
    "where_when",  # enrolment: school, grade, the date or period described: invalid → quarantined
    "what",  # the facts the row exists to report; NULL would change its meaning → quarantined
    "detail",  # any other fact: invalid → set to NULL, row kept, repair logged
]
OnInvalid = Literal["quarantine", "null", "null_if_id", "null_if_named"]
_ON_INVALID: dict[str, OnInvalid] = {
    "who": "quarantine", "who_id": "null_if_named", "who_backup": "null_if_id", "where_when": "quarantine",
    "what": "quarantine", "detail": "null",
}
_ON_INVALID_TEXT: dict[str, str] = {
    "quarantine": "row quarantined",
    "null": "set to NULL (logged); row kept",
    "null_if_id": "set to NULL (logged) when the row's student ID is valid; else row quarantined",
    "null_if_named": "set to NULL (logged; the row counts as having no ID) when the row names the child by {alt}; "
                     "else row quarantined",
}
# Columns that, all present, say who a child is when the student ID cannot (see `other_identity`).
OTHER_IDENTITY: tuple[tuple[str, ...], ...] = (("first_name", "last_name"), ("student_no",))


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    en: str
    th: str
    required: bool = True
    allowed: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    identity: bool = False  # personal data: kept only in the identity vault, never in the warehouse
    # A date that is personal data to the day (the birth date): the exact value goes only to the
    # identity vault, and the warehouse keeps its month alone, as the first day of the month, under
    # this name. Linkage reads the exact date from the vault; features need only the month.
    month_only_as: str | None = None
    references_registry: bool = True  # for school_code / tambon_code kinds
    # Safe by default: a column is a DETAIL (nullable on repair) only where the contract says so.
    role: Role = "what"

    @property
    def stored_name(self) -> str:
        """The column's name in the warehouse (`month_only_as` for a month-only date)."""
        return self.month_only_as or self.name

    @property
    def personal(self) -> bool:
        """Personal data: its delivered value is never shown in a quarantine reason or repair log."""
        return self.identity or self.month_only_as is not None

    @property
    def on_invalid(self) -> OnInvalid:
        """What ingestion does with a row whose value in this column breaks a rule."""
        return _ON_INVALID[self.role]

    def on_invalid_text(self, source: Source | None = None) -> str:
        """`on_invalid` as a data officer reads it, with the column's role."""
        text = _ON_INVALID_TEXT[self.on_invalid]
        if self.on_invalid == "null_if_named":
            alt = other_identity(source) if source is not None else OTHER_IDENTITY
            text = (_ON_INVALID_TEXT["quarantine"] if not alt
                    else text.format(alt=" or ".join(" + ".join(f"`{c}`" for c in a) for a in alt)))
        return f"{self.role.replace('_', '/')}: {text}"

    def rule_text(self) -> str:
        """The rule as a data officer reads it."""
        parts: list[str] = ["required" if self.required else "may be empty"]
        kind_text = {
            "text": "text (UTF-8)",
            "int": "whole number",
            "float": "number",
            "date": "date YYYY-MM-DD (CE; a BE year such as 2551 is converted and logged)",
            "year_month": "month YYYY-MM (CE; BE converted and logged)",
            "be_year": "Buddhist-Era year, e.g. 2568 (a CE year such as 2025 is converted and logged)",
            "enum": "one of: " + ", ".join(self.allowed),
            "flag": "0 or 1",
            "student_id": "13-digit citizen ID with a valid check digit, or a G-code (G + 12 digits)",
            "school_code": "10-digit school code present in the school registry",
            "tambon_code": "6-digit tambon code present in the area registry",
            "grade": "grade code " + ", ".join(GRADES),
            "round_id": "scoring round YYYY-Tn-kind (BE year, term 1 or 2, e.g. 2568-T1-early)",
        }[self.kind]
        if not self.references_registry:
            kind_text = kind_text.split(" present in")[0] + " (this registry defines it)"
        parts.append(kind_text)
        if self.min is not None:
            parts.append(f"≥ {self.min:g}")
        if self.max is not None:
            parts.append(f"≤ {self.max:g}")
        if self.identity:
            parts.append("personal data: stored only in the identity vault")
        if self.month_only_as:
            parts.append(f"personal data: the exact date is stored only in the identity vault; the warehouse "
                         f"keeps its month (`{self.month_only_as}`, the first day of the month)")
        return "; ".join(parts)


@dataclass(frozen=True)
class RowRule:
    """A rule across columns of one row; `sql` is a DuckDB boolean over typed columns that must hold."""

    name: str
    sql: str
    message: str
    columns: tuple[str, ...]  # the columns blamed for a break (set to NULL when they all may be)


@dataclass(frozen=True)
class Source:
    name: str  # also the CSV file name without .csv, and the warehouse table name
    title_en: str
    title_th: str
    system: str  # who delivers it
    columns: tuple[Column, ...]
    describes: str | None  # the column holding the date a row describes (None: registry)
    row_rules: tuple[RowRule, ...] = field(default_factory=tuple)

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


THAI_MARK_STATUS = ("ปกติ", "เสี่ยง", "มีปัญหา")  # normal / at-risk / problem
SEX = ("M", "F")
NATIONALITY = ("TH", "MM", "KH", "LA", "VN", "CN", "OTHER", "UNKNOWN")
DISABILITY = (
    "none", "visual", "hearing", "intellectual", "physical", "learning", "speech",
    "behavioural", "autism", "multiple",
)

_ID = Column(
    "student_id", "student_id", "Citizen ID (13 digits) or G-code of the student",
    "เลขประจำตัวประชาชน 13 หลัก หรือรหัส G", required=False, identity=True, role="who_id",
)
_FIRST = Column("first_name", "text", "First name (Thai)", "ชื่อ", identity=True, role="who")
_LAST = Column("last_name", "text", "Family name (Thai)", "นามสกุล", identity=True, role="who")
_SEX = Column("sex", "enum", "Sex", "เพศ", allowed=SEX, role="who_backup")
_BIRTH = Column("birth_date", "date", "Date of birth", "วันเดือนปีเกิด", role="who_backup",
                month_only_as="birth_month")
_SCHOOL = Column("school_code", "school_code", "School code (10 digits)", "รหัสโรงเรียน 10 หลัก", role="where_when")
# The school's own student number: unique within one school, meaningless outside it. It lets a
# row whose citizen ID is missing still be tied to the right child of that school.
_STUDENT_NO = Column(
    "student_no", "text", "Student number within the school (เลขประจำตัวนักเรียน)", "เลขประจำตัวนักเรียน",
    required=False, role="who",
)
_YEAR = Column("academic_year", "be_year", "Academic year (BE)", "ปีการศึกษา (พ.ศ.)", min=2550, max=2700,
               role="where_when")
_TERM = Column("term", "int", "Term (1 or 2)", "ภาคเรียน", min=1, max=2, role="where_when")

CARE_DIMENSIONS = (
    "learning", "behaviour_emotion", "health", "family", "safety", "substances",
    "sexual_behaviour", "economic",
)
CCT_DIMENSIONS = (
    "hh_dependants", "hh_no_own_house", "hh_poor_housing", "hh_no_farmland",
    "hh_no_clean_water", "hh_no_electricity", "hh_no_vehicle", "hh_no_appliances",
)
_CCT_DIM_TEXT = {
    "hh_dependants": ("Household carries dependants (disabled, chronically ill, elderly, no income)", "มีภาระพึ่งพิง"),
    "hh_no_own_house": ("Household does not own its home (rents, lives free, squats)", "ไม่มีบ้านเป็นของตนเอง"),
    "hh_poor_housing": ("Home in poor condition (dilapidated, makeshift materials)", "สภาพที่อยู่อาศัยชำรุด"),
    "hh_no_farmland": ("No farm land (or under 1 rai)", "ไม่มีที่ดินทำกิน"),
    "hh_no_clean_water": ("Drinking water not piped or bottled (well, rain, river)", "แหล่งน้ำดื่มไม่สะอาด"),
    "hh_no_electricity": ("No mains electricity", "ไม่มีไฟฟ้า"),
    "hh_no_vehicle": ("No working vehicle", "ไม่มียานพาหนะ"),
    "hh_no_appliances": ("No working household appliances", "ไม่มีเครื่องใช้ไฟฟ้า"),
}
CARETAKERS = ("both_parents", "mother", "father", "grandparents", "relatives", "other")
TRAVEL_MODES = ("walk", "bicycle", "motorcycle", "school_bus", "public", "boat", "other")
AFFILIATIONS = ("OBEC", "OVEC", "NFE", "LAO", "OPEC", "BPP")
EXIT_TYPES = (
    "transfer_out", "completed", "dropout", "death", "moved_abroad", "to_vocational",
    "to_non_formal", "to_work_training",
)
# OBEC dropout-tracking reason codes (ร.ร. tracking form); `exits.reason_code`.
EXIT_REASONS: dict[str, tuple[str, str]] = {
    "01": ("Transport difficulty", "ปัญหาการเดินทาง"),
    "02": ("Health", "ปัญหาสุขภาพ"),
    "03": ("Disability", "ความพิการ"),
    "04": ("Family necessity (must work, care for family)", "ความจำเป็นของครอบครัว"),
    "05": ("Low parental income", "ผู้ปกครองมีรายได้น้อย"),
    "06": ("Social adjustment", "ปรับตัวไม่ได้"),
    "07": ("Conduct", "มีปัญหาพฤติกรรม"),
    "08": ("Over-age", "อายุเกินเกณฑ์"),
    "09": ("Moved abroad", "ย้ายไปต่างประเทศ"),
    "10": ("Death", "เสียชีวิต"),
    "11": ("Family migration", "ย้ายตามผู้ปกครอง"),
    "12": ("Marriage / pregnancy", "สมรส/ตั้งครรภ์"),
    "20": ("Transferred to another school", "ย้ายสถานศึกษา"),
    "21": ("Completed the programme", "จบการศึกษา"),
    "22": ("Continued in vocational / non-formal / work training", "ศึกษาต่อสายอาชีพ/กศน./ฝึกอาชีพ"),
}
OTHER_SYSTEMS = ("OVEC", "NFE", "LAO", "OPEC", "BPP")
OTHER_LEVELS = (
    *GRADES, "PVC1", "PVC2", "PVC3", "NFE_PRIMARY", "NFE_LOWER_SEC", "NFE_UPPER_SEC",
)
WELFARE_LINKS = (
    "disability_card", "chronic_illness", "bedridden_household_member", "teen_pregnancy",
    "state_welfare_card",
)
WELFARE_AGENCIES = ("MOPH", "MSDHS", "NHSO", "MOF")
TZD_STATUS = ("identified", "care_plan", "follow_up", "closed")
# `moved_abroad`: the follow-up visit found the family gone abroad (the case is closed, the child
# is not a dropout of this country's schools; labels read it as a move).
TZD_OUTCOMES = ("returned_to_school", "non_formal", "work_training", "not_returned", "moved_abroad", "")
EWE_STATUS = ("in_training", "qualified", "working_with_training")
REGIONS = ("north", "northeast", "central", "east", "west", "south", "bangkok")
SIZE_CLASSES = ("small", "medium", "large", "extra_large")

SOURCES: dict[str, Source] = {}


def _add(source: Source) -> None:
    SOURCES[source.name] = source


_add(Source(
    "areas", "Area registry (tambon → amphoe → province)", "ทะเบียนพื้นที่", "DOPA / OBEC",
    (
        Column("tambon_code", "tambon_code", "Tambon code", "รหัสตำบล", references_registry=False),
        Column("tambon_name", "text", "Tambon name", "ชื่อตำบล"),
        Column("amphoe_code", "text", "Amphoe code (4 digits: province + amphoe)", "รหัสอำเภอ"),
        Column("amphoe_name", "text", "Amphoe name", "ชื่ออำเภอ"),
        Column("province_code", "text", "Province code (2 digits)", "รหัสจังหวัด"),
        Column("province_name", "text", "Province name", "ชื่อจังหวัด"),
        Column("region", "enum", "Region", "ภาค", allowed=REGIONS),
    ),
    describes=None,
    row_rules=(
        RowRule("amphoe_in_tambon", "substr(tambon_code, 1, 4) = amphoe_code",
                "amphoe_code must be the first 4 digits of tambon_code", ("amphoe_code",)),
        RowRule("province_in_tambon", "substr(tambon_code, 1, 2) = province_code",
                "province_code must be the first 2 digits of tambon_code", ("province_code",)),
    ),
))
_add(Source(
    "schools", "School registry", "ทะเบียนสถานศึกษา", "OBEC and other systems",
    (
        Column("school_code", "school_code", "School code", "รหัสสถานศึกษา", references_registry=False),
        Column("school_name", "text", "School name", "ชื่อสถานศึกษา"),
        Column("affiliation", "enum", "Affiliation", "สังกัด", allowed=AFFILIATIONS),
        Column("tambon_code", "tambon_code", "Tambon where the school stands", "ตำบลที่ตั้ง"),
        Column("students", "int", "Enrolled students (last census)", "จำนวนนักเรียน", min=0, max=10000),
        Column("size_class", "enum", "OBEC size class (≤120 small, ≤600 medium, ≤1500 large)", "ขนาดโรงเรียน", allowed=SIZE_CLASSES),
        Column("remote", "flag", "Remote or hardship area school", "โรงเรียนพื้นที่ห่างไกล/ทุรกันดาร"),
        Column("distance_km", "float", "Distance to the district town (km)", "ระยะทางถึงอำเภอ (กม.)", min=0, max=500),
    ),
    describes=None,
))
_add(Source(
    "dmc_census", "OBEC DMC census enrolment", "ข้อมูลนักเรียนรายบุคคล DMC", "OBEC DMC",
    (
        Column("census_date", "date", "Census date (10 June or 10 November)", "วันที่นับข้อมูล", role="where_when"),
        _YEAR, _TERM, _SCHOOL, _ID, _STUDENT_NO,
        Column("prefix", "text", "Name prefix (เด็กชาย, เด็กหญิง, นาย, นางสาว)", "คำนำหน้า", required=False,
               identity=True, role="who"),
        _FIRST, _LAST, _SEX, _BIRTH,
        Column("grade", "grade", "Grade", "ชั้น", role="where_when"),
        Column("room", "int", "Room number", "ห้อง", min=1, max=30, role="detail"),
        Column("nationality", "enum", "Nationality", "สัญชาติ", allowed=NATIONALITY, role="detail"),
        Column("disability", "enum", "Disability type", "ประเภทความพิการ", allowed=DISABILITY, role="detail"),
        Column("tambon_code", "tambon_code", "Tambon of the home address", "ตำบลที่อยู่", role="detail"),
    ),
    describes="census_date",
    row_rules=(
        RowRule("age_plausible",
                "date_diff('year', birth_date, census_date) BETWEEN 2 AND 25",
                "birth date gives an age outside 2-25 years on the census date", ("birth_date",)),
    ),
))
_add(Source(
    "other_enrolment", "Enrolment in other systems (vocational, non-formal, local-government, private, BPP)",
    "ข้อมูลผู้เรียนในระบบอื่น", "OVEC / NFE / LAO / OPEC / BPP",
    (
        Column("record_date", "date", "Date the enrolment was counted", "วันที่นับข้อมูล", role="where_when"),
        Column("system", "enum", "Enrolling system", "ระบบ", allowed=OTHER_SYSTEMS, role="where_when"),
        _SCHOOL, _ID,
        _FIRST, _LAST, _SEX, _BIRTH,
        Column("level", "enum", "Level or grade", "ระดับชั้น", allowed=OTHER_LEVELS, role="where_when"),
    ),
    describes="record_date",
))
_add(Source(
    "ewe_training", "Workforce training paths (E-Workforce Ecosystem)", "ข้อมูลเส้นทางการพัฒนาทักษะ (EWE)", "TPQI",
    (
        Column("record_date", "date", "Date the status was recorded", "วันที่บันทึก", role="where_when"),
        _ID, _FIRST, _LAST, _SEX, _BIRTH,
        Column("programme_code", "text", "Training or qualification programme", "รหัสหลักสูตร"),
        Column("status", "enum", "Status on the path", "สถานะ", allowed=EWE_STATUS),
    ),
    describes="record_date",
))
_add(Source(
    "attendance", "Monthly attendance", "ข้อมูลการมาเรียนรายเดือน", "School MIS",
    (
        Column("year_month", "year_month", "Month described", "เดือน", role="where_when"),
        _SCHOOL, _ID, _STUDENT_NO,
        Column("school_days", "int", "School days in the month", "จำนวนวันเรียน", min=0, max=31),
        Column("days_present", "int", "Days present", "มาเรียน", min=0, max=31),
        Column("days_leave", "int", "Days on approved leave (sick, personal)", "ลา", min=0, max=31),
        Column("days_absent", "int", "Days absent without leave", "ขาด", min=0, max=31),
    ),
    describes="year_month",
    row_rules=(
        RowRule("days_add_up", "days_present + days_leave + days_absent = school_days",
                "days_present + days_leave + days_absent must equal school_days", ("school_days",)),
    ),
))
_add(Source(
    "grades", "Term grades (interim and final)", "ผลการเรียนรายภาค", "School MIS",
    (
        _YEAR, _TERM, _SCHOOL, _ID, _STUDENT_NO,
        Column("assessment", "enum", "interim (mid-term) or final", "ประเภทการประเมิน", allowed=("interim", "final")),
        Column("assessed_on", "date", "Date the marks were recorded", "วันที่บันทึกผล", role="where_when"),
        # GPA may be empty by contract (no graded subject); a GPA out of range is set to NULL.
        Column("gpa", "float", "Grade point average of graded subjects", "เกรดเฉลี่ย", required=False, min=0, max=4,
               role="detail"),
        Column("n_subjects", "int", "Subjects assessed", "จำนวนรายวิชา", min=1, max=20),
        Column("n_mark_0", "int", "Subjects with mark 0 (fail)", "จำนวนวิชาที่ได้ 0", min=0, max=20),
        Column("n_mark_r", "int", "Subjects with mark ร (incomplete)", "จำนวนวิชาที่ติด ร", min=0, max=20),
        Column("n_mark_ms", "int", "Subjects with mark มส (not allowed to sit: attendance < 80%)", "จำนวนวิชาที่ติด มส", min=0, max=20),
        Column("n_mark_mp", "int", "Activities with mark มผ (not passed)", "จำนวนกิจกรรมที่ มผ", min=0, max=20),
    ),
    describes="assessed_on",
    row_rules=(
        RowRule("marks_within_subjects", "n_mark_0 + n_mark_r + n_mark_ms <= n_subjects",
                "more failing marks than subjects", ("n_subjects",)),
    ),
))
_add(Source(
    "cct_screening", "CCT poverty screening (form นร.01)", "ข้อมูลคัดกรองนักเรียนยากจน (นร.01)", "EEF",
    (
        _YEAR, _TERM, _SCHOOL, _ID, _STUDENT_NO, _FIRST, _LAST,
        Column("screened_on", "date", "Date of the home visit", "วันที่คัดกรอง", role="where_when"),
        Column("household_size", "int", "Household members", "จำนวนสมาชิกในครัวเรือน", min=1, max=30, role="detail"),
        Column("income_per_person", "int", "Household income per person per month (baht)", "รายได้เฉลี่ยต่อคนต่อเดือน (บาท)", min=0, max=200000),
        *(Column(d, "flag", *_CCT_DIM_TEXT[d]) for d in CCT_DIMENSIONS),
        Column("caretaker", "enum", "Who cares for the child", "ผู้ดูแลนักเรียน", allowed=CARETAKERS, role="detail"),
        Column("travel_minutes", "int", "Travel time to school (minutes)", "เวลาเดินทาง (นาที)", min=0, max=300,
               role="detail"),
        Column("travel_mode", "enum", "Main way to school", "วิธีเดินทาง", allowed=TRAVEL_MODES, role="detail"),
    ),
    describes="screened_on",
))
_add(Source(
    "care_screening", "Student-care system screening (step 2)", "ผลคัดกรองระบบดูแลช่วยเหลือนักเรียน", "OBEC",
    (
        _YEAR, _TERM, _SCHOOL, _ID, _STUDENT_NO,
        Column("screened_on", "date", "Date of screening", "วันที่คัดกรอง", role="where_when"),
        *(Column(d, "enum", f"Screening result: {d.replace('_', ' ')}", f"ด้าน{d}", allowed=THAI_MARK_STATUS)
          for d in CARE_DIMENSIONS),
    ),
    describes="screened_on",
))
_add(Source(
    "welfare_links", "Welfare and health links (MOPH, MSDHS, NHSO, MOF)", "ข้อมูลเชื่อมโยงสวัสดิการและสุขภาพ", "other ministries",
    (
        Column("record_date", "date", "Date the link became valid", "วันที่มีผล", role="where_when"),
        _ID,
        Column("agency", "enum", "Agency", "หน่วยงาน", allowed=WELFARE_AGENCIES),
        Column("link_type", "enum", "What the link says", "ประเภทข้อมูล", allowed=WELFARE_LINKS),
    ),
    describes="record_date",
))
_add(Source(
    "exits", "Transfers and exits with reason codes", "ข้อมูลการย้าย/ออกกลางคัน", "OBEC",
    (
        Column("exit_date", "date", "Date the student left", "วันที่ออก", role="where_when"),
        _SCHOOL, _ID, _STUDENT_NO, _FIRST, _LAST,
        Column("grade", "grade", "Grade when leaving", "ชั้น", role="where_when"),
        Column("exit_type", "enum", "Type of exit", "ประเภทการออก", allowed=EXIT_TYPES),
        Column("reason_code", "enum", "OBEC reason code", "รหัสสาเหตุ", allowed=tuple(EXIT_REASONS), role="detail"),
        # A destination outside the registry reads as "destination not known", which is what it is.
        Column("destination_school_code", "school_code", "Destination school, when known", "สถานศึกษาปลายทาง",
               required=False, role="detail"),
    ),
    describes="exit_date",
))
_add(Source(
    "tzd_cases", "Thailand Zero Dropout case records", "ข้อมูลกรณีเด็กนอกระบบ (TZD)", "TZD / EEF",
    (
        Column("case_id", "text", "Case number", "เลขที่กรณี"),
        Column("updated_on", "date", "Date of this case status", "วันที่ปรับปรุง", role="where_when"),
        _ID, _FIRST, _LAST, _SEX, _BIRTH,
        Column("tambon_code", "tambon_code", "Tambon where the child was found", "ตำบลที่พบ", role="where_when"),
        Column("status", "enum", "Case stage", "สถานะ", allowed=TZD_STATUS),
        Column("outcome", "enum", "Outcome of a closed case", "ผลการช่วยเหลือ", required=False, allowed=TZD_OUTCOMES),
    ),
    describes="updated_on",
))

REGISTRY_SOURCES = ("areas", "schools")

# --- the schools' assignment (issue 15) ---------------------------------------------------------
# A deployment running a randomised holdout keeps who was eligible, served or held out, and what
# was done, as two CSV files in one folder (the simulator writes OUT/actions/, simulator/PROCESS.md
# §2b). They are delivered sources like the others -- validated, quarantined and accounted, the
# student ID tokenised at ingest -- but not ones a label or a feature reads, nor ones linkage keys:
# `features.ingest.actions` loads them into `src_assignment` / `src_actions` (the generic loader,
# linkage and the simulator's deliveries iterate `SOURCES` only), and `features.assignment` reads
# them back keyed by `student_key` through linkage's `token_keys`. Every column says who, where/when
# or what: a row with any invalid value is quarantined (no details to repair).
ARMS = ("served", "holdout")
# The action record's statuses (serving/actions.py STATUSES: held equal by a test); done, referred
# and closed mean the action was received.
ACTION_STATUSES = ("planned", "done", "referred", "closed")
_ROUND = Column("round_id", "round_id", "Scoring round whose list prompted it", "รอบการประเมินความเสี่ยง",
                role="where_when")
_PUPIL_ID = Column("student_id", "student_id", "Citizen ID (13 digits) or G-code of the student",
                   "เลขประจำตัวประชาชน 13 หลัก หรือรหัส G", identity=True, role="who")
ACTION_SOURCES: dict[str, Source] = {s.name: s for s in (
    Source(
        "assignment", "The schools' assignment: eligible pupils, served or held out at random",
        "รายชื่อนักเรียนกลุ่มเป้าหมาย (ได้รับการช่วยเหลือ / กลุ่มควบคุมสุ่ม)", "Schools / area office",
        (_ROUND, _SCHOOL, _PUPIL_ID,
         Column("arm", "enum", "served, or held out at random (not served this term)", "กลุ่ม", allowed=ARMS)),
        describes="round_id",
    ),
    Source(
        "actions", "Actions recorded for pupils (the action record's catalogue codes)",
        "การช่วยเหลือที่บันทึกไว้", "Schools / area office",
        (_ROUND, _SCHOOL, _PUPIL_ID,
         Column("action", "text", "Action code of the action record's catalogue (e.g. home_visit)", "รหัสการช่วยเหลือ"),
         Column("status", "enum", "Status of the action", "สถานะ", allowed=ACTION_STATUSES),
         Column("recorded_on", "date", "Date the action was recorded", "วันที่บันทึก", role="where_when")),
        describes="recorded_on",
    ),
)}

# --- the delivery schedule -----------------------------------------------------------------------
# When each source's delivery is due: the ONE statement of "when is a census (or a month, a quarter)
# known". The simulator delivers on `lag_days`; monitoring measures lateness against `overdue_days`;
# labels wait for each evidence source until it has arrived or is overdue. The warehouse's actual
# `known_at` decides in practice: the schedule only says what to expect and when to stop waiting.

Period = Literal["census", "month", "quarter", "half_year", "term_end", "interim_marks"]
_PERIOD_TEXT: dict[str, str] = {
    "census": "the census date (10 June, 10 November)",
    "month": "the end of the month",
    "quarter": "the end of the calendar quarter",
    "half_year": "the record date (31 March, 30 September)",
    "term_end": "the last day of the term",
    "interim_marks": "the day interim marks are recorded",
}


@dataclass(frozen=True)
class DeliveryDue:
    """One delivery rhythm of a source: what a delivery covers and when it is due."""

    source: str
    period: Period  # what one delivery describes; the days below count from the end of it
    lag_days: int  # typical days from the end of the period to the delivery (negative: a part sent before)
    overdue_days: int  # days from the end of the period after which an absent delivery is overdue
    note: str = ""

    def period_end(self, cal: SchoolCalendar, day: dt.date) -> dt.date:
        """The end of the latest period of this rhythm that ends on or before `day`, or for a census
        or quarter the period holding `day` (a census period is the census date itself)."""
        if self.period == "census":
            return day
        if self.period == "month":
            return dt.date(day.year + (day.month == 12), day.month % 12 + 1, 1) - dt.timedelta(days=1)
        if self.period == "quarter":
            q = (day.month - 1) // 3 + 1
            return dt.date(day.year + (q == 4), (3 * q) % 12 + 1, 1) - dt.timedelta(days=1)
        if self.period == "half_year":
            marks = [dt.date(y, m, d) for y in (day.year - 1, day.year) for m, d in ((3, 31), (9, 30))]
            return max(x for x in marks if x <= day)
        from features.ids import BE_OFFSET

        year = day.year + BE_OFFSET
        ends = [cal.term(t).ends.in_year(y) for y in (year - 2, year - 1, year) for t in (1, 2)]
        if self.period == "term_end":
            return max(x for x in ends if x <= day)
        marks = [cal.term(t).interim_marks.in_year(y) for y in (year - 2, year - 1, year) for t in (1, 2)]
        return max(x for x in marks if x <= day)

    def due_on(self, cal: SchoolCalendar, day: dt.date) -> dt.date:
        """The typical delivery day of the period `period_end` picks for `day`."""
        return self.period_end(cal, day) + dt.timedelta(days=self.lag_days)

    def overdue_on(self, cal: SchoolCalendar, day: dt.date) -> dt.date:
        """From this day an absent delivery of that period is overdue."""
        return self.period_end(cal, day) + dt.timedelta(days=self.overdue_days)


DELIVERY_SCHEDULE: tuple[DeliveryDue, ...] = (
    DeliveryDue("dmc_census", "census", 18, 21, "per school: a school's file may be refused or late"),
    DeliveryDue("other_enrolment", "census", 35, 42, "the other systems count on the DMC census date"),
    DeliveryDue("cct_screening", "census", 40, 45),
    DeliveryDue("care_screening", "census", 45, 50),
    DeliveryDue("attendance", "month", 10, 12),
    DeliveryDue("grades", "interim_marks", 5, 10, "interim marks"),
    DeliveryDue("grades", "term_end", 20, 30, "final marks"),
    DeliveryDue("exits", "term_end", -8, -1, "a part: exits known 10 days before it"),
    DeliveryDue("exits", "term_end", 18, 25, "the rest of the term's exits"),
    DeliveryDue("welfare_links", "quarter", 15, 30),
    DeliveryDue("tzd_cases", "quarter", 15, 30),
    DeliveryDue("ewe_training", "half_year", 20, 35),
    # Kept by the schools through the term; monitoring and action-aware training read what has arrived.
    DeliveryDue("assignment", "term_end", 20, 30, "the schools' assignment (ACTION_SOURCES): the term's eligible pupils"),
    DeliveryDue("actions", "term_end", 20, 30, "the schools' action record of the term (ACTION_SOURCES)"),
)


def delivery_due(source: str, period: Period | None = None) -> DeliveryDue:
    """The schedule entry of a source: its complete delivery (the latest-due rhythm of that
    period, e.g. the term-end exits rather than the part sent before the term ends)."""
    rows = [d for d in DELIVERY_SCHEDULE if d.source == source and (period is None or d.period == period)]
    if not rows:
        raise KeyError(f"no delivery schedule for source {source!r}" + (f" and period {period!r}" if period else ""))
    if period is None and len({d.period for d in rows}) > 1:
        raise KeyError(f"source {source!r} has several delivery rhythms: name the period")
    return max(rows, key=lambda d: d.lag_days)


def schedule_markdown() -> list[str]:
    """The delivery schedule as a Markdown table (part of the contract document)."""
    out = [
        "## Delivery schedule",
        "",
        "When each delivery is expected, counted from the end of the period it describes. *Typical* is",
        "when it usually arrives; after *overdue* an absent delivery is late (monitoring reports it) and",
        "labels stop waiting for it. A label is `unknown` while a source it needs is neither delivered nor",
        "overdue, and while the pupil's own school's census has not arrived (a refused or late census",
        "file is never assumed empty). The day a delivery's rows actually became known (`known_at`)",
        "decides in practice.",
        "",
        "| source | period described | typical (days after) | overdue (days after) | note |",
        "|---|---|---|---|---|",
    ]
    for d in DELIVERY_SCHEDULE:
        out.append(f"| `{d.source}` | {_PERIOD_TEXT[d.period]} | {d.lag_days} | {d.overdue_days} | {d.note} |")
    return [*out, ""]


def identity_columns(source: Source) -> tuple[str, ...]:
    return tuple(c.name for c in source.columns if c.identity)


def other_identity(source: Source) -> tuple[tuple[str, ...], ...]:
    """The column sets of `source` that say who a child is without the student ID (any one set,
    all its values present): names, or the student number at the row's school."""
    return tuple(a for a in OTHER_IDENTITY if set(a) <= set(source.column_names))


def rule_on_invalid(source: Source, rule: RowRule) -> OnInvalid:
    """What a break of `rule` costs: its blamed columns are set to NULL only when every one of
    them may be (the strictest of their `on_invalid`); otherwise the row is quarantined."""
    kinds = {source.column(c).on_invalid for c in rule.columns}
    if kinds & {"quarantine", "null_if_named"} or not kinds:
        return "quarantine"  # (no row rule reads the student ID)
    return "null_if_id" if "null_if_id" in kinds else "null"


_ROLES_TEXT = [
    "## When a value breaks its rule",
    "",
    "Every column has a role in its row (the *if invalid* column below). A row must say **who** the",
    "child is, **where/when** (school, grade, the date or period it describes) and carry **what** it",
    "exists to report; a row that cannot is quarantined whole. Any other value is a **detail**: when it",
    "is invalid (or missing though required) it is set to NULL, the row is kept, and the repair is",
    "logged, so one impossible room number or disability code never makes a pupil who stayed vanish",
    "from a census. A **who/backup** value (birth date, sex) helps say who only when the student ID",
    "cannot: it is set to NULL when the row's student ID is a valid citizen ID (check digit) or G-code,",
    "and the row is quarantined otherwise. A student ID of absurd form (letters, more than 20",
    "characters) is set to NULL, so the row counts as one without an ID (which the contract allows),",
    "when the row names the child another way — first and last name, or the student number at its",
    "school — and is quarantined otherwise. A row rule blames some columns; a broken row rule sets",
    "them to NULL when all of them may be, and quarantines the row otherwise.",
    "",
    "Values whose NULL would change what the row says are not details: attendance day counts, marks",
    "counts, poverty-screening income and household dimensions, care-screening results, exit types,",
    "welfare links, training status. Registry rows (areas, schools) define the codes others refer to:",
    "they are quarantined whole.",
    "",
    "Accounting, per file: received = accepted + quarantined. `repaired` counts accepted rows with at",
    "least one value changed (a BE/CE year converted, or a value set to NULL): a row with two repaired",
    "values counts once. The warehouse's `repairs` table has one row per repaired value (file, line,",
    "column, the value as delivered — never for personal-data columns — and the rule, `null_<check>`",
    "for a value set to NULL), and the delivery's quarantine report lists each with its reason and",
    "the action taken.",
    "",
]


def contract_markdown() -> str:
    """The contract as Markdown tables, for CONTRACT.md and `ews contract`."""
    out = [
        "# Source-data contract",
        "",
        "A delivery is a folder with `delivery.json` and CSV files named after the sources below.",
        "",
        "```json",
        '{"delivery_id": "2568-06-30_dmc_census", "system": "OBEC DMC", "delivered_on": "2025-06-30"}',
        "```",
        "",
        "`delivered_on` is the date the rows became known; every row also carries the date it describes.",
        "Files are UTF-8 CSV with a header row (TIS-620 / Windows-874 files are detected, converted and",
        "reported). Columns marked *personal data* go only to the identity vault; the warehouse keeps a keyed",
        "token instead, or, for the birth date, its month alone (`birth_month`). Their delivered values are",
        "never shown in quarantine reasons or repair logs.",
        "",
        *_ROLES_TEXT,
        *schedule_markdown(),
    ]
    for s in (*SOURCES.values(), *ACTION_SOURCES.values()):
        out += [
            f"## `{s.file_name}` — {s.title_en} ({s.title_th})",
            "",
            f"Delivered by: {s.system}. "
            + (f"Date described: `{s.describes}`." if s.describes else "Registry: describes the delivery date.")
            + (" Delivered in a folder of its own with the other file of the schools' assignment (`delivery.json` "
               "optional: without one the day of ingest is the day it became known), `ews ingest FOLDER`; read by "
               "`ews monitor --actions` and `ews train --actions`, never by labels or features. Student IDs are "
               "tokenised at ingest like every source's." if s.name in ACTION_SOURCES else ""),
            "",
            "| column | ความหมาย | meaning | rule | if invalid |",
            "|---|---|---|---|---|",
        ]
        for c in s.columns:
            out.append(f"| `{c.name}` | {c.th} | {c.en} | {c.rule_text()} | {c.on_invalid_text(s)} |")
        for r in s.row_rules:
            blamed = ", ".join(f"`{c}`" for c in r.columns)
            out.append(f"| *row rule* `{r.name}` | | | {r.message} | blames {blamed}: "
                       f"{_ON_INVALID_TEXT[rule_on_invalid(s, r)]} |")
        out.append("")
    return "\n".join(out)
