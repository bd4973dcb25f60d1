"""The base class of every recipe section: unknown keys are errors, every field carries help text."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A recipe section. `extra="forbid"` makes a misspelt key fail validation instead of being ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
