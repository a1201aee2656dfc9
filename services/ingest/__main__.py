from services.ingest.settings import Settings
from shared.serve import serve

if __name__ == "__main__":
    serve("ingest", Settings(), "services.ingest.main:create_app")
