"""Verifies webhook requests with the Standard Webhooks reference library (PyPI `standardwebhooks`).

Reads {"secrets": ["whsec_…", …], "messages": [{"headers": {…}, "body": "…"}, …]} on standard input;
every message must verify under every secret. Exits non-zero, saying which failed, otherwise.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

request = json.load(sys.stdin)
failures = []
for secret in request["secrets"]:
    webhook = Webhook(secret)
    for message in request["messages"]:
        try:
            webhook.verify(message["body"], message["headers"])
        except WebhookVerificationError as error:
            failures.append(f"{message['headers'].get('webhook-id')}: {error}")
if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"verified {len(request['messages'])} messages under {len(request['secrets'])} secrets")
