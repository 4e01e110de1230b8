"""The one exception tree of kms.

    KmsError
    ├── ConfigError          a setting or definition is missing or invalid
    └── DatabaseError        the campaign database cannot be reached, started or migrated

Every expected failure raises a subclass of KmsError with a message a user can act
on; the `kms` command line prints that message on one line and exits non-zero.
"""


class KmsError(Exception):
    """Base class of every expected kms failure."""


class ConfigError(KmsError):
    """A setting or definition is missing or invalid."""


class DatabaseError(KmsError):
    """The campaign database cannot be reached, started or migrated."""
