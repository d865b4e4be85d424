"""Verifies webhook deliveries tenantd sent, with an implementation that is
not ours: the Python `standardwebhooks` package.

Usage: webhook_check.py < deliveries.json

The input is a JSON list of {"secret": "whsec_...", "headers": {...},
"body": "<base64>"}. Prints a JSON list, one entry per delivery:
{"valid": bool, "error": str}.
"""

import base64
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> None:
    results = []
    for delivery in json.load(sys.stdin):
        body = base64.b64decode(delivery["body"])
        try:
            Webhook(delivery["secret"]).verify(body, delivery["headers"])
            results.append({"valid": True, "error": ""})
        except WebhookVerificationError as error:
            results.append({"valid": False, "error": str(error)})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
