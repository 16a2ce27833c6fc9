"""Typed configuration of the simulator: world size, generating-process coefficients, fault rates.

One pydantic model (`SimulationConfig`) holds everything a run depends on; it is written verbatim to
`truth/process.json`, so a reader can reproduce any figure from the seed and this file. Every field
carries a description because the process document (PROCESS.md) and the JSON are read by people
who want to know what the ceiling means.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from features.calendar import SchoolCalendar
from features.ids import GRADES
from simulator.scenarios import Scenario

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _grade_map(values: list[float]) -> dict[str, float]:
    return dict(zip(GRADES, values, strict=True))


class WorldConfig(_Model):
    """Size and shape of the simulated school system."""

    students: int = Field(100_000, ge=200, le=20_000_000,
                          description="Students enrolled in OBEC schools at the first census (10 June of the first year).")
    years: int = Field(6, ge=1, le=20, description="Academic years simulated (each has two terms and four scoring rounds).")
    first_year: int = Field(2563, ge=2560, le=2600, description="First academic year, Buddhist Era (2563 = 2020/21).")
    seed: int = Field(7, ge=0, description="Random seed: the same config and seed give byte-identical files.")
    students_per_province: int = Field(
        100_000, ge=1_000,
        description="About how many students one simulated province holds; N <= 1.5x this gives one province "
                    "(Mae Hong Son), more gives several real provinces, processed one at a time.")
    students_per_school: float = Field(190.0, gt=10, description="Mean OBEC school size (students).")
    entry_shares: dict[str, float] = Field(
        default_factory=lambda: {"K1": 0.052, "K2": 0.008, "K3": 0.006, "P1": 0.024, "M1": 0.02, "M4": 0.008},
        description="New pupils entering OBEC each June by grade, as a share of the first census: K1 entrants, "
                    "children from local-government or private kindergartens and primary schools. Keeps size about stable.")


class ProcessConfig(_Model):
    """Coefficients of the dropout hazard and of the competing exits (all on the logit scale per term end)."""

    grade_logit_t1: dict[str, float] = Field(
        default_factory=lambda: _grade_map(
            [-9.67, -9.80, -9.48, -10.77, -10.63, -10.69, -10.67, -10.68, -9.87, -8.16, -8.57, -7.99, -6.60, -6.68, -6.89]),
        description="Dropout intercept at the end of term 1 (mid-year), per grade.")
    grade_logit_t2: dict[str, float] = Field(
        default_factory=lambda: _grade_map(
            [-9.07, -9.20, -7.28, -9.97, -9.83, -9.89, -9.87, -9.88, -6.62, -7.46, -7.87, -4.34, -5.90, -5.98, -6.99]),
        description="Dropout intercept at the end of term 2 (year end: includes the K3->P1, P6->M1 and M3->M4 transitions).")
    beta_poverty: float = Field(0.55, description="Per unit of log(3000 / income per person): poorer households leave more.")
    beta_cct_dims: float = Field(0.10, description="Per CCT household-status dimension present (0-8).")
    beta_caretaker_not_parent: float = Field(0.40, description="Child cared for by grandparents, relatives or others.")
    beta_travel_per_10min: float = Field(0.06, description="Per 10 minutes of travel to school.")
    beta_remote_school: float = Field(0.25, description="School in a remote or hardship area.")
    beta_small_school: float = Field(0.20, description="Small school (<= 120 students).")
    province_effect_sd: float = Field(0.15, description="SD of the random province effect (plus fixed effects in world.py).")
    beta_non_thai: float = Field(0.45, description="Child without Thai nationality (G-code or non-Thai 13-digit ID).")
    beta_disability: float = Field(0.45, description="Any disability.")
    beta_chronic_illness: float = Field(0.25, description="Chronic illness (a welfare link records it).")
    beta_overage_per_year: float = Field(0.35, description="Per year older than the typical age for the grade.")
    beta_repeated: float = Field(0.30, description="Has repeated a grade before.")
    beta_engagement: float = Field(-0.65, description="Per SD of the latent engagement (higher engagement, lower hazard).")
    beta_past_pregnancy: float = Field(0.9, description="Teen pregnancy in an earlier term.")
    # Interactions and school effects (issue 12.3): the hazard is no longer additive in the child's
    # factors, so a model that can find interactions (trees) has something to find. Each is part of
    # the state known at the term's start, so the ceiling stays exact (PROCESS.md §2.4).
    beta_poverty_transition: float = Field(
        0.45, description="Year end of P6 and M3 (the moves to a secondary school): per unit of poverty below the extremely-poor "
                          "line (max(pov, 0)), on top of beta_poverty: a poor family pays for uniforms, fees and travel "
                          "of the next school exactly when the child could leave.")
    beta_distance_transition_per_10km: float = Field(
        0.12, description="Year end of P6 and M3 when the next grade means a new school (not an extended-opportunity "
                          "school keeping its M1 pupils, not a secondary school keeping its M4 pupils): per 10 km from "
                          "the child's school to the district town, where the secondary school stands.")
    beta_cct_grant_lost: float = Field(
        0.55, description="Extremely poor child (CCT-eligible, income <= 3,000 baht) whose attendance last term was "
                          "below cct_attendance_condition: the conditional grant is lost for this term.")
    cct_attendance_condition: float = Field(0.85, gt=0, le=1, description="The CCT grant's attendance condition (DOMAIN.md: >= 85%).")
    school_effect_sd: float = Field(
        0.50, ge=0, description="SD of a school's random effect (its climate) on the dropout logit, drawn once per school "
                                "with mean -sd^2/2 so the average odds do not move; 0.5 rivals poverty's spread "
                                "(0.55 x SD(pov) ~ 0.47), as school-level predictors rival individual ones (Perdomo et al.).")
    shock_names: tuple[str, ...] = Field(("parent_migration", "illness", "debt_job_loss", "teen_pregnancy"),
                                         description="Shock types that can arrive during a term.")
    shock_prob: tuple[float, ...] = Field((0.10, 0.08, 0.10, 0.0),
                                          description="Base per-term probability of each shock (pregnancy: see pregnancy_prob_*).")
    shock_poverty_mult: tuple[float, ...] = Field((1.6, 1.2, 1.6, 1.3),
                                                  description="Multiplier of the shock probability for extremely poor households.")
    pregnancy_prob_13_14: float = Field(0.004, description="Per-term probability of a teen pregnancy, girls aged 13-14.")
    pregnancy_prob_15_up: float = Field(0.012, description="Per-term probability of a teen pregnancy, girls aged 15 or more.")
    shock_hazard: tuple[float, ...] = Field((1.8, 1.6, 1.9, 2.5), description="Logit added to the dropout hazard by each shock arriving this term.")
    shock_engagement_drop: float = Field(0.35, description="Engagement lost (persistently) after any shock.")
    shock_attendance_logit: float = Field(-1.4, description="Daily attendance logit shift after a shock has arrived.")
    income_recovery_per_term: float = Field(
        0.25, ge=0, le=1, description="Share of the gap between a household's income and its usual income (log scale) closed "
                                      "each term: a debt's cut or a remittance fades instead of adding up term after term.")
    caretaker_return_per_term: float = Field(
        0.20, ge=0, le=1, description="Per term: chance a parent who migrated for work is back as the child's carer.")
    history_terms: int = Field(
        24, ge=0, le=60, description="Terms of shocks, their consequences and recovery each child lives before its first "
                                     "census (plus the repetitions of the year ends from P1 to its entry grade), so the first "
                                     "census already holds what the process leaves and an unchanged world is stationary.")
    history_pool: int = Field(
        3, ge=1, le=10, description="Candidate children drawn per pupil of the first census and per entrant; the pre-census "
                                   "history keeps those who stayed in school (the pupils of a census are the ones who stayed).")
    engagement_rho: float = Field(0.80, description="Term-to-term autocorrelation of the latent engagement.")
    engagement_poverty: float = Field(-0.15, description="Mean engagement shift per unit of poverty (log(3000/income)).")
    # competing exits (logit relative to staying)
    transfer_logit: float = Field(-4.4, description="Transfer to another OBEC school, per term end.")
    other_school_logit_k3: float = Field(-2.2, description="K3 year end: move to a local-government/private/BPP primary school.")
    other_school_logit: float = Field(-7.0, description="Move to a non-OBEC school at other term ends.")
    vocational_logit_m3: float = Field(-0.45, description="M3 year end: move to vocational education (OVEC).")
    vocational_logit_upper: float = Field(-5.5, description="M4-M5 term ends: move to vocational education.")
    nfe_logit: float = Field(-6.2, description="Move to non-formal education (age >= 13), per term end.")
    nfe_overage_per_year: float = Field(0.6, description="NFE logit per year over-age.")
    ewe_logit: float = Field(-6.5, description="Move to a workforce training path (age >= 15), per term end.")
    death_logit: float = Field(-8.8, description="Death, per term end.")
    abroad_logit_thai: float = Field(-8.0, description="Migration abroad, Thai child, per term end.")
    abroad_logit_non_thai: float = Field(-4.6, description="Migration abroad, non-Thai child, per term end.")
    abroad_parent_migration: float = Field(1.0, description="Added to the abroad logit by a parent-migration shock.")
    completed_logit_m6: float = Field(7.0, description="M6 year end: completion (upper secondary graduation).")
    repeat_logit: float = Field(-4.6, description="Repetition at year end (P1-M6) for a child who stays, before modifiers.")
    repeat_ms_logit: float = Field(
        2.5, description="Added to the repetition logit when the term-2 final marks hold any 'มส' (not allowed to sit the "
                         "exam: attendance under 80%): absence -> repetition -> over-age, a chain the hazard then feels.")
    dropout_exit_recorded: float = Field(0.45, ge=0, le=1, description="Share of dropouts for whom the school files an exits row.")
    transfer_destination_known: float = Field(0.8, ge=0, le=1, description="Share of transfer rows that name the destination school.")
    tzd_find_per_quarter: float = Field(0.18, ge=0, le=1, description="Chance a dropout aged <= 18 is found by TZD in a quarter.")
    tzd_outcomes: dict[str, float] = Field(
        default_factory=lambda: {"returned_to_school": 0.25, "non_formal": 0.2, "work_training": 0.1, "not_returned": 0.45},
        description="Outcome shares of closed TZD cases.")
    cct_screen_prob_poor: float = Field(0.9, description="Chance an extremely poor child (<= 3000 baht) is screened in a term.")
    cct_screen_prob_near: float = Field(0.55, description="Chance a child with 3000-6000 baht is screened in a term.")
    cct_screen_prob_other: float = Field(0.04, description="Chance any other child is screened in a term.")
    gcode_new_id_per_year: float = Field(0.10, ge=0, le=1, description="Yearly chance a G-code child receives a 13-digit ID.")


class FaultConfig(_Model):
    """Rates of the faults real deliveries have. Every injected fault is recorded in truth/records.parquet."""

    id_typo: float = Field(0.004, ge=0, le=1, description="Row's student ID mistyped (one digit changed or two adjacent digits swapped).")
    id_missing: float = Field(0.004, ge=0, le=1, description="Row's student ID left empty (where the contract allows it).")
    other_system_id_multiplier: float = Field(5.0, ge=0, description="ID typo/missing rates are this many times higher in other_enrolment, ewe_training and tzd_cases.")
    name_variant: float = Field(0.02, ge=0, le=1, description="A first or last name spelt differently (Thai tone marks, thanthakhat, consonant swaps, vowels).")
    be_birth_year: float = Field(0.004, ge=0, le=1, description="Birth date written with a Buddhist-Era year where CE is expected.")
    ce_academic_year: float = Field(0.002, ge=0, le=1, description="Academic year written in CE (2025) where BE (2568) is expected.")
    duplicate_row: float = Field(0.002, ge=0, le=1, description="An exact duplicate of a row appended to the same file.")
    impossible_value: float = Field(0.0008, ge=0, le=1, description="An impossible value (days present > school days, GPA 5.2, negative income, age 0).")
    late_delivery: float = Field(0.06, ge=0, le=1, description="Share of deliveries sent 2-8 weeks late.")
    missing_screening: float = Field(0.03, ge=0, le=1, description="Share of a school's CCT/care screening rows that never arrive (whole schools).")
    malformed_delivery: float = Field(0.008, ge=0, le=1, description="Per delivery: chance one school's rows come as a separate malformed file (0 switches off).")
    # Exit rows the school never files, per exit type (issue 11.6). The child still leaves; only the
    # exits row is missing (listed in truth/omissions.parquet, reason "exit_row_missing"), so the
    # label must find the path elsewhere (other_enrolment, EWE, TZD) or say it does not know.
    # Dropouts are not here: whether a school files a dropout row is ProcessConfig.dropout_exit_recorded.
    exit_missing_vocational: float = Field(0.30, ge=0, le=1, description="Move to vocational education (OVEC) with no exits row.")
    exit_missing_non_formal: float = Field(0.20, ge=0, le=1, description="Move to non-formal education (NFE) with no exits row.")
    exit_missing_work_training: float = Field(0.40, ge=0, le=1, description="Move to a workforce training path (EWE) with no exits row.")
    exit_missing_abroad: float = Field(0.50, ge=0, le=1, description="Move abroad with no exits row.")
    exit_missing_death: float = Field(0.15, ge=0, le=1, description="Death with no exits row.")
    exit_missing_transfer_obec: float = Field(0.05, ge=0, le=1, description="Transfer to another OBEC school with no exits row.")
    exit_missing_transfer_lao: float = Field(0.20, ge=0, le=1, description="Move to a local-government (LAO) school with no exits row.")
    exit_missing_transfer_opec: float = Field(0.20, ge=0, le=1, description="Move to a private (OPEC) school with no exits row.")
    exit_missing_transfer_bpp: float = Field(0.35, ge=0, le=1, description="Move to a Border Patrol Police school with no exits row.")
    exit_missing_completed: float = Field(0.02, ge=0, le=1, description="M6 completion with no exits row.")
    census_refused_school: float = Field(
        0.002, ge=0, le=1, description="Per OBEC school and census: the school's census file is refused by DMC, so none of "
                                       "its pupils is in that census delivery (truth/omissions.parquet, reason 'census_refused').")


class InterventionConfig(_Model):
    """Schools act on their list each term (issue 15.5; simulator/interventions.py, PROCESS.md §2.8).

    Off unless given: with `interventions=None` the simulator draws no extra random number and every
    file is what it was. Effects are on the dropout logit of the term's end and are never positive.
    """

    from_year: int = Field(ge=2500, le=2700, description="First academic year (BE) in which schools act.")
    from_term: int = Field(1, ge=1, le=2, description="First term (1 or 2) in which schools act, in that year.")
    capacity_share: float = Field(
        0.10, gt=0, le=1, description="Share of a school's pupils it can act on in a term: the top ceil(share x pupils) "
                                      "of its own ranking (the school's stand-in for the list) are eligible.")
    uptake: float = Field(0.8, ge=0, le=1, description="Chance a pupil offered an action receives it (the family "
                                                        "agrees, the visit happens); the others stay 'planned'.")
    holdout_share: float = Field(
        0.5, ge=0, lt=1, description="Share of eligible pupils (or schools: holdout_unit) randomly held out: eligible "
                                    "but not served, so the effect of acting can be estimated. 0 = no holdout.")
    holdout_unit: Literal["pupil", "school"] = Field(
        "pupil", description="'pupil': each eligible pupil is drawn each term; 'school': a school is drawn once for "
                             "the whole run and serves none of its eligible pupils (bootstrap by school then).")
    cct_effect_per_poverty: float = Field(
        0.8, ge=0, description="A CCT application lowers the dropout logit by this per unit of poverty below the "
                               "extremely-poor line (max(pov, 0)): the grant helps in proportion to the need.")
    home_visit_effect_per_disengagement: float = Field(
        0.7, ge=0, description="A home visit lowers the dropout logit by this per SD of engagement below 0 "
                               "(max(-e, 0)): it helps a disengaged child, not one whose risk is poverty or a shock.")
    counselling_effect_per_disengagement: float = Field(
        0.5, ge=0, description="Counselling: as a home visit, with this coefficient.")
    fade_per_term: float = Field(
        0.5, ge=0, le=1, description="The effect left one term later is this share of the term before's (0 = lasts "
                                     "one term; 1 = never fades). A new action counts when it is stronger than what is left of the last.")


class SimulationConfig(_Model):
    """Everything one simulation run depends on; written to truth/process.json."""

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this configuration schema.")
    world: WorldConfig = Field(default_factory=WorldConfig, description="World size and shape.")
    process: ProcessConfig = Field(default_factory=ProcessConfig, description="Generating-process coefficients.")
    faults: FaultConfig = Field(default_factory=FaultConfig, description="Fault rates.")
    calendar: SchoolCalendar = Field(default_factory=SchoolCalendar, description="School calendar (terms, censuses, rounds).")
    scenario: Scenario | None = Field(
        None, description="Optional change to the world from a given term on (simulator/scenarios.py); "
                          "None = the unchanged world (and truth/process.json does not mention it).")
    interventions: InterventionConfig | None = Field(
        None, description="Schools acting on the list (simulator/interventions.py); None = nobody acts (and "
                          "truth/process.json does not mention it).")

    @classmethod
    def small(cls, students: int = 3000, years: int = 2, seed: int = 7, **faults: float) -> SimulationConfig:
        """A small world for tests and quick looks."""
        return cls(world=WorldConfig(students=students, years=years, seed=seed),
                   faults=FaultConfig(**faults))
