"""Why a cmdlet call returned no results, as Python exceptions.

One class per case of the WIT ``call-error`` variant (the Rust SDK's ``CallError``), plus
``Decode`` for results that arrived but were not JSON. Every message is safe to show a user:
the host never puts a credential, token or transport detail in one. ``str(error)`` reads like
the Rust SDK's ``Display``, and ``error.to_json()`` like its serde form
(``{"kind": "denied", "rule": ..., "reason": ...}``).
"""


class CallError(Exception):
    """Base of every call failure; ``kind`` names the case (``denied``, ``outcome-unknown``, ...)."""

    kind = "call-error"

    def fields(self):
        """The case's fields, as the Rust SDK serializes them."""
        return {}

    def to_json(self):
        """``{"kind": ..., **fields}``: hand the error on as JSON."""
        return {"kind": self.kind, **self.fields()}

    def is_not_found(self):
        """True when Exchange said the object does not exist."""
        return False

    def is_transient(self):
        """True where the same *read* might succeed later (throttling, timeouts); never retry a write."""
        return False


class Denied(CallError):
    """The operator's policy refused the call. Retrying will not help."""

    kind = "denied"

    def __init__(self, rule, reason):
        self.rule, self.reason = rule, reason
        super().__init__(f"denied by {rule}: {reason}")

    def fields(self):
        return {"rule": self.rule, "reason": self.reason}


class Invalid(CallError):
    """The call was malformed (parameters not an object, a bad name, a value of the wrong shape)."""

    kind = "invalid"

    def __init__(self, message):
        self.message = message
        super().__init__(f"invalid call: {message}")

    def fields(self):
        return {"message": self.message}


class Budget(CallError):
    """A budget of this run's grant is used up."""

    kind = "budget"

    def __init__(self, budget, limit):
        self.budget, self.limit = budget, limit
        super().__init__(f"budget exhausted: {budget} (the grant allows {limit})")

    def fields(self):
        return {"budget": self.budget, "limit": self.limit}


class Throttled(CallError):
    """Exchange is throttling the tenant; ``retry_after_ms`` when Exchange said how long."""

    kind = "throttled"

    def __init__(self, retry_after_ms):
        self.retry_after_ms = retry_after_ms
        if retry_after_ms is None:
            super().__init__("throttled by Exchange")
        else:
            super().__init__(f"throttled by Exchange; retry after {retry_after_ms} ms")

    def fields(self):
        return {"retry_after_ms": self.retry_after_ms}

    def is_transient(self):
        return True


class Remote(CallError):
    """The cmdlet ran and failed in Exchange."""

    kind = "remote"

    def __init__(self, error_id, exception, message, request_id):
        self.error_id, self.exception = error_id, exception
        self.message, self.request_id = message, request_id
        short = exception.rsplit(".", 1)[-1] if exception else "Exchange error"
        text = f"{short}: {message}"
        if error_id and request_id:
            text += f" (error id {error_id}, request id {request_id})"
        elif error_id:
            text += f" (error id {error_id})"
        elif request_id:
            text += f" (request id {request_id})"
        super().__init__(text)

    def fields(self):
        return {
            "error_id": self.error_id,
            "exception": self.exception,
            "message": self.message,
            "request_id": self.request_id,
        }

    def is_not_found(self):
        return self.exception.endswith("ManagementObjectNotFoundException")


class Timeout(CallError):
    """No answer within the call's time limit. A read may be retried."""

    kind = "timeout"

    def __init__(self, after_ms):
        self.after_ms = after_ms
        super().__init__(f"no answer within {after_ms} ms")

    def fields(self):
        return {"after_ms": self.after_ms}

    def is_transient(self):
        return True


class OutcomeUnknown(CallError):
    """A write was sent and its fate is unknown; the host did not repeat it."""

    kind = "outcome-unknown"

    def __init__(self, message):
        self.message = message
        super().__init__(
            f"the write's outcome is unknown and it was not retried ({message}); "
            "check the object's state before trying again"
        )

    def fields(self):
        return {"message": self.message}


class Unavailable(CallError):
    """The host cannot serve calls now; the detail is in the operator's log."""

    kind = "unavailable"

    def __init__(self, message):
        self.message = message
        super().__init__(f"the host cannot serve calls now: {message}")

    def fields(self):
        return {"message": self.message}


class Decode(CallError):
    """Guest side: the results arrived but were not the JSON the plugin expected."""

    kind = "decode"

    def __init__(self, message):
        self.message = message
        super().__init__(f"the results did not have the expected shape: {message}")

    def fields(self):
        return {"message": self.message}


def from_wit(error):
    """The exception for a ``wit_world.imports.exchange.CallError`` value."""
    from wit_world.imports import exchange as wit

    v = error.value
    if isinstance(error, wit.CallError_Denied):
        return Denied(v.rule, v.reason)
    if isinstance(error, wit.CallError_Invalid):
        return Invalid(v)
    if isinstance(error, wit.CallError_Budget):
        return Budget(v.budget, v.limit)
    if isinstance(error, wit.CallError_Throttled):
        return Throttled(v)
    if isinstance(error, wit.CallError_Remote):
        return Remote(v.error_id, v.exception, v.message, v.request_id)
    if isinstance(error, wit.CallError_Timeout):
        return Timeout(v)
    if isinstance(error, wit.CallError_OutcomeUnknown):
        return OutcomeUnknown(v)
    if isinstance(error, wit.CallError_Unavailable):
        return Unavailable(v)
    return Unavailable(f"an error this SDK does not know: {error!r}")
