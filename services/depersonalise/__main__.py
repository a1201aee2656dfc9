"""``python -m services.depersonalise``: the depersonalise service on 127.0.0.1:8003."""

from services.depersonalise.settings import Settings
from shared.serve import serve

if __name__ == "__main__":
    # Keys and the callers' public keys come from the environment (settings.py).
    serve("depersonalise", Settings(), "services.depersonalise.main:create_app")
