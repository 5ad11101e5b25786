from shortrec.cli import app

app()
