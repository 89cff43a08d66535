from ollama_cli.cli import main

main()
