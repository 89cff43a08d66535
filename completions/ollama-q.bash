# bash completion for ollama-q.
# Install: ollama-q completion bash > ~/.local/share/bash-completion/completions/ollama-q
#   (or source it from ~/.bashrc: source <(ollama-q completion bash))
# Each <TAB> runs `ollama-q` (with _OLLAMA_Q_COMPLETE set) to ask for candidates.
_ollama_q_completion() {
    local IFS=$'
'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _OLLAMA_Q_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _ollama_q_completion ollama-q
