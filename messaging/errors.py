"""Errors of the messaging services, each with the `code` of the WebSocket protocol's
`error` frame; the REST views map them to status codes."""


class ChatError(Exception):
    code = "validation"
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(ChatError):
    code = "validation"
    status = 400


class NotFound(ChatError):
    code = "not_found"
    status = 404


class RateLimited(ChatError):
    code = "rate_limited"
    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
