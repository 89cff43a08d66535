#compdef ollama-q
# zsh completion for ollama-q.
# Install: in ~/.zshrc, after `autoload -Uz compinit && compinit`:
#   source <(ollama-q completion zsh)
# Each <TAB> runs `ollama-q` (with _OLLAMA_Q_COMPLETE set) to ask for candidates.
_ollama_q_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _OLLAMA_Q_COMPLETE=complete_zsh ollama-q)
}

compdef _ollama_q_completion ollama-q
