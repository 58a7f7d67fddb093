from amsctl.main import app

app()
