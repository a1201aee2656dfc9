from services.gateway.settings import Settings
from shared.serve import serve

if __name__ == "__main__":
    serve(
        "gateway",
        Settings(),  # type: ignore[call-arg]
        "services.gateway.main:create_app",
    )
