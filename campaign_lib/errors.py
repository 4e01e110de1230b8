"""The one exception tree of kms.

    KmsError
    ├── ConfigError                  a setting or definition is missing or invalid
    ├── DatabaseError                the campaign database cannot be reached, started or migrated
    ├── IngestError                  a source cannot be read; permanent unless a subclass says otherwise
    │   ├── SourceUnavailableError   transient: server down, connection dropped; worth a retry
    │   ├── HostKeyError             permanent: the server's host key is unknown or has changed
    │   └── FileRejected             permanent: a file fails a file-level check and is quarantined whole
    ├── SelectionError               a selection is invalid, a parameter value wrong, or its query fails
    └── DeliveryError                a message or run cannot be delivered; permanent unless a subclass says so
        ├── TransientDeliveryError   the provider is down, slow or refused the connection; retry later
        ├── PermanentDeliveryError   credentials refused, configuration wrong; retrying will not help
        └── DeliveryPaused           the run's error budget is used up or a provider asked to stop

Every expected failure raises a subclass of KmsError with a message a user can act
on; the `kms` command line prints that message on one line and exits non-zero.
"""


class KmsError(Exception):
    """Base class of every expected kms failure."""


class ConfigError(KmsError):
    """A setting or definition is missing or invalid."""


class DatabaseError(KmsError):
    """The campaign database cannot be reached, started or migrated."""


class IngestError(KmsError):
    """A source cannot be read (e.g. its credentials are refused); retrying will not help."""


class SourceUnavailableError(IngestError):
    """A source is down or dropped the connection; a retry later may succeed."""


class HostKeyError(IngestError):
    """A server's host key is not the one in known_hosts; never retried, a human must check it."""


class FileRejected(IngestError):
    """A file fails a file-level check (header, encoding, truncation, shrink, quality gate);
    it is quarantined whole and nothing of it is merged."""


class SelectionError(KmsError):
    """A selection cannot be used: its file has a mistake (the message names the file, the place
    and the problem), a parameter value does not fit, or its query was refused; permanent."""


class DeliveryError(KmsError):
    """A message or a run cannot be delivered as asked; permanent unless a subclass says so."""


class TransientDeliveryError(DeliveryError):
    """A provider is down, timed out or dropped the connection before taking a message over;
    the messages not handed over are retried later."""


class PermanentDeliveryError(DeliveryError):
    """A provider refuses the sender (credentials, configuration); retrying will not help."""


class DeliveryPaused(DeliveryError):
    """A run's delivery is paused (error budget used up, or a provider's policy rejection);
    `kms delivery resume RUN` continues it where it stopped."""
