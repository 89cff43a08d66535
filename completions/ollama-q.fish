# fish completion for ollama-q.
# Install: ollama-q completion fish > ~/.config/fish/completions/ollama-q.fish
# Each <TAB> runs `ollama-q` (with _OLLAMA_Q_COMPLETE set) to ask for candidates.
complete --command ollama-q --no-files --arguments "(env _OLLAMA_Q_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=get-args _TYPER_COMPLETE_ARGS=(commandline -cp) ollama-q)" --condition "env _OLLAMA_Q_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=is-args _TYPER_COMPLETE_ARGS=(commandline -cp) ollama-q"
