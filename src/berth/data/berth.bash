# bash completion for berth (added by 'berth install')
_berth_users() {
    # people, not system accounts: the uids berth serves by default
    getent passwd | awk -F: '$3 >= 1000 && $3 < 65534 {print $1}'
}

_berth() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local commands="up down status env logs refusals reap doctor demo install uninstall config pam"
    local i cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --config) ((i++)) ;;
            -*) ;;
            *) cmd=${COMP_WORDS[i]}; break ;;
        esac
    done
    if [ "$prev" = "--config" ]; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    fi
    if [ -z "$cmd" ]; then
        COMPREPLY=($(compgen -W "$commands --config --debug --help" -- "$cur"))
        return
    fi
    local opts=""
    case $cmd in
        up|env) opts="" ;;
        down) opts="--purge --yes" ;;
        status|doctor|refusals) opts="--json" ;;
        logs) opts="-f --follow -n --lines" ;;
        reap) opts="--dry-run --user" ;;
        demo) opts="--keep" ;;
        install) opts="--dry-run --pam-service --berth" ;;
        uninstall) opts="--dry-run --pam-service" ;;
        config) opts="--example --check" ;;
    esac
    case $cmd in
        up|down|status|env|logs|refusals) COMPREPLY=($(compgen -W "$opts --help $(_berth_users)" -- "$cur")) ;;
        reap) if [ "$prev" = "--user" ]; then COMPREPLY=($(compgen -W "$(_berth_users)" -- "$cur"));
              else COMPREPLY=($(compgen -W "$opts --help" -- "$cur")); fi ;;
        *) COMPREPLY=($(compgen -W "$opts --help" -- "$cur")) ;;
    esac
}
complete -F _berth berth
