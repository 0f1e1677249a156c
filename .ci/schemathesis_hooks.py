"""Hooks for .ci/api-contract: give webhook deliveries their sender's credential.

Without them every generated webhook request stops at 401 (schemathesis cannot know the
secrets), and the code behind the check is never reached. For GitLab (a token header) and Jira
Data Center (a `secret` query parameter) the value a case carries is replaced by the right one
when the case carries it and was generated as valid data; a case that leaves the credential
out, or a negative case, is sent as generated.

GitHub's credential is an HMAC of the body bytes. Signing here means rewriting the body after
schemathesis has chosen it, which its duplicate detection does not expect (a negative case
was answered as its signed positive twin), so GitHub deliveries stop at the signature check in
this run; crates/autodev-server/tests/suite/webhooks.rs sends signed real payloads instead.
"""

import os

import schemathesis


def _positive(case):
    meta = getattr(case, "meta", None)
    if meta is None:
        return True
    if meta.generation.mode.is_negative:
        return False
    return not any(info.mode.is_negative for info in meta.components.values())


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if not _positive(case):
        return
    path = case.operation.path
    if path == "/webhooks/gitlab" and case.headers:
        for key in list(case.headers):
            if key.lower() == "x-gitlab-token":
                case.headers[key] = os.environ["AUTODEV_GITLAB_WEBHOOK_TOKEN"]
    elif path == "/webhooks/jira" and case.query and "secret" in case.query:
        case.query["secret"] = os.environ["AUTODEV_JIRA_WEBHOOK_SECRET"]
