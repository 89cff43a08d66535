from ollama_cli.cli import run

run()
