"""`GET/PUT /v1/patients/{patient_id}/settings`: a patient's SpO2 scale and their
overrides of the ward's threshold rules.

These models check each override on its own (numbers, a reason for `disabled`, one
limit); whether it fits the rule it names (a threshold rule, in its direction) is the
gateway's check against the rules in force.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    model_validator,
)

__all__ = ["OverrideBody", "PatientSettingsBody", "PatientSettingsOut", "RulesQuery"]

_Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
# Strict: "88" for a limit is a typo, not a number.
# A rule name as rules files spell them (`spo2-low`, `resp_rate-high`).
_RuleName = Annotated[str, Field(min_length=1, max_length=64)]


class OverrideBody(BaseModel):
    """One threshold rule for this patient: a new limit (`below` on a below-rule, `above`
    on an above-rule), `for_s`, `clear_margin`, or `disabled` with a reason. What is
    left out keeps the ward's value."""

    model_config = ConfigDict(extra="forbid")

    below: _Number | None = Field(None, description="New limit of a below-rule.")
    above: _Number | None = Field(None, description="New limit of an above-rule.")
    for_s: _NonNegative | None = Field(None, description="Seconds the violation must last.")
    clear_margin: _NonNegative | None = Field(
        None, description="How far back past the limit a value must come to clear."
    )
    disabled: StrictBool = Field(False, description="The rule raises nothing for this patient.")
    reason: Annotated[StrictStr, Field(max_length=500)] = Field(
        "", description="Why (required with `disabled`): shown next to the override."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        changes = (self.below, self.above, self.for_s, self.clear_margin)
        if self.below is not None and self.above is not None:
            raise ValueError("give `below` or `above`, not both")
        if self.disabled:
            if not self.reason.strip():
                raise ValueError("`disabled` needs a non-empty `reason`")
            if any(c is not None for c in changes):
                raise ValueError(
                    "a disabled rule takes no `below`, `above`, `for_s` or `clear_margin`"
                )
        elif all(c is None for c in changes):
            raise ValueError("give `below`, `above`, `for_s`, `clear_margin` or `disabled`")
        return self


class PatientSettingsBody(BaseModel):
    """`PUT`: the whole settings document (it replaces the stored one; an override left
    out is removed)."""

    model_config = ConfigDict(extra="forbid")

    spo2_scale: Literal[1, 2] = Field(
        1, description="NEWS2 SpO2 scale: 2 for hypercapnic respiratory failure."
    )
    overrides: dict[_RuleName, OverrideBody] = Field(
        default_factory=dict, description="By threshold rule name."
    )


class RulesQuery(BaseModel):
    """Query parameters of `GET /v1/rules`."""

    model_config = ConfigDict(extra="forbid")

    patient_id: str | None = Field(
        None, description="List this patient's effective rules, overrides beside defaults."
    )


class PatientSettingsOut(BaseModel):
    """The patient's settings as stored (never set: scale 1, no overrides, `updated_at`
    and `updated_by` null)."""

    patient_id: str
    spo2_scale: Literal[1, 2]
    overrides: dict[str, OverrideBody]
    updated_at: AwareDatetime | None
    updated_by: str | None
