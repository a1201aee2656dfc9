from services.agreements.settings import Settings
from shared.serve import serve

if __name__ == "__main__":
    # The internal secret comes from CSP_INTERNAL_SECRET in the environment.
    serve("agreements", Settings(), "services.agreements.main:create_app")
