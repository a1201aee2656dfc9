from csp_cli.main import app

app(prog_name="csp")
