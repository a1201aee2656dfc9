from services.gateway.settings import Settings
from shared.serve import serve

if __name__ == "__main__":
    serve(
        "gateway",
        Settings(),
        "services.gateway.main:create_app",
    )
