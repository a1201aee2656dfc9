from services.agreements.settings import Settings
from shared.serve import serve

if __name__ == "__main__":
    # Keys and the callers' public keys come from the environment (settings.py).
    serve("agreements", Settings(), "services.agreements.main:create_app")
