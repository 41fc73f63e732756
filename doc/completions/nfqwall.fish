# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_nfqwall_global_optspecs
    string join \n h/help V/version
end

function __fish_nfqwall_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_nfqwall_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_nfqwall_using_subcommand
    set -l cmd (__fish_nfqwall_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c nfqwall -n "__fish_nfqwall_needs_command" -s h -l help -d 'Print help'
complete -c nfqwall -n "__fish_nfqwall_needs_command" -s V -l version -d 'Print version'
complete -c nfqwall -n "__fish_nfqwall_needs_command" -f -a "replay" -d 'Replay a pcap or pcapng capture through the engine: what would nfqwall do?'
complete -c nfqwall -n "__fish_nfqwall_needs_command" -f -a "check" -d 'Validate a config file; errors name file, line and field'
complete -c nfqwall -n "__fish_nfqwall_needs_command" -f -a "config" -d 'Print configuration'
complete -c nfqwall -n "__fish_nfqwall_needs_command" -f -a "rules" -d 'Render, install or remove the kernel ruleset that feeds nfqwall'
complete -c nfqwall -n "__fish_nfqwall_needs_command" -f -a "run" -d 'Run the firewall: judge the packets the kernel queues (NFQUEUE) until SIGTERM'
complete -c nfqwall -n "__fish_nfqwall_needs_command" -f -a "stats" -d 'Show the running daemon\'s counters and the kernel\'s queue counters'
complete -c nfqwall -n "__fish_nfqwall_needs_command" -f -a "report" -d 'Draw each peer\'s trouble (a capture or an events log) as one HTML file'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand replay" -l config -d 'Config file (default: the built-in default config)' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand replay" -l ct-state -d 'Conntrack state the engine assumes for every packet (auto: derive it). With `--visibility deployed` the state comes from the conntrack model instead' -r -f -a "auto\t'Derived from the engine\'s own tracking, as conntrack would see it'
new\t'Every packet NEW'
invalid\t'Every packet INVALID'
untracked\t'Every packet UNTRACKED'
established\t'Every packet ESTABLISHED'"
complete -c nfqwall -n "__fish_nfqwall_using_subcommand replay" -l visibility -d 'Which packets the engine sees: `full` (every frame, for analysis) or `deployed` (only what the config\'s rendered ruleset would queue, with the state conntrack would give it: what the live daemon sees)' -r -f -a "full\t'Every frame of the capture'
deployed\t'Only the frames the rendered ruleset would queue to the live daemon'"
complete -c nfqwall -n "__fish_nfqwall_using_subcommand replay" -l mode -d 'Override the mode of every service' -r -f -a "enforce\t'Drop what the policy drops'
log-only\t'Accept everything; log what enforce would have dropped'"
complete -c nfqwall -n "__fish_nfqwall_using_subcommand replay" -l per-packet -d 'Print one JSON object per packet instead of the summary'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand replay" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand check" -s h -l help -d 'Print help'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand config" -l default -d 'Print the built-in default as a commented TOML file'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand config" -s h -l help -d 'Print help'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and not __fish_seen_subcommand_from print install remove" -s h -l help -d 'Print help'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and not __fish_seen_subcommand_from print install remove" -f -a "print" -d 'Print the ruleset rendered from the config (iptables-restore format, or nft)'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and not __fish_seen_subcommand_from print install remove" -f -a "install" -d 'Install the ruleset atomically (one iptables-restore --noflush per family; if the second fails, the first is rolled back); installing again changes nothing'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and not __fish_seen_subcommand_from print install remove" -f -a "remove" -d 'Remove the jumps and the NFQWALL-* chains, and the tables nfqwall\'s install created if they are empty now; nothing else. A no-op if absent'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from print" -l config -d 'Config file (default: the built-in default config)' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from print" -l family -d 'Which family to print (iptables format only; nft prints one inet table)' -r -f -a "ipv4\t'IPv4 only (for iptables-restore)'
ipv6\t'IPv6 only (for ip6tables-restore)'
both\t'IPv4, then IPv6'"
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from print" -l format -d 'Output format' -r -f -a "iptables\t'iptables-restore text, one ruleset per family'
nft\t'One nftables `table inet nfqwall`'"
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from print" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from install" -l config -d 'Config file (default: the built-in default config). `remove` does not need it: it removes nfqwall\'s chains by name, whatever config installed them' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from install" -l backend -d 'iptables backend; auto: the one the `iptables` command uses' -r -f -a "auto\t'What `iptables -V` reports'
nft\t'iptables-nft (nf_tables)'
legacy\t'iptables-legacy (x_tables)'"
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from install" -l state-dir -d 'Where the record of the tables nfqwall\'s install created is kept (default: $NFQWALL_STATE_DIR, else /run/nfqwall); install and remove must agree' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from install" -l command-timeout -d 'Kill any iptables/nft command that runs longer than this, in seconds (default: $NFQWALL_COMMAND_TIMEOUT, else 10); the xtables lock is waited for half of it' -r
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from install" -l dry-run -d 'Print the transactions instead of applying them'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from install" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from remove" -l config -d 'Config file (default: the built-in default config). `remove` does not need it: it removes nfqwall\'s chains by name, whatever config installed them' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from remove" -l backend -d 'iptables backend; auto: the one the `iptables` command uses' -r -f -a "auto\t'What `iptables -V` reports'
nft\t'iptables-nft (nf_tables)'
legacy\t'iptables-legacy (x_tables)'"
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from remove" -l state-dir -d 'Where the record of the tables nfqwall\'s install created is kept (default: $NFQWALL_STATE_DIR, else /run/nfqwall); install and remove must agree' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from remove" -l command-timeout -d 'Kill any iptables/nft command that runs longer than this, in seconds (default: $NFQWALL_COMMAND_TIMEOUT, else 10); the xtables lock is waited for half of it' -r
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from remove" -l dry-run -d 'Print the transactions instead of applying them'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand rules; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand run" -l config -d 'Config file (default: the built-in default: log-only, queue 0, all TCP)' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand run" -l mode -d 'Override the mode of every service' -r -f -a "enforce\t'Drop what the policy drops'
log-only\t'Accept everything; log what enforce would have dropped'"
complete -c nfqwall -n "__fish_nfqwall_using_subcommand run" -l queues -d 'Queue numbers to bind, "N" or "A-B" (overrides daemon.queues)' -r
complete -c nfqwall -n "__fish_nfqwall_using_subcommand run" -l backend -d 'iptables backend for the rules; auto: the one the `iptables` command uses' -r -f -a "auto\t'What `iptables -V` reports'
nft\t'iptables-nft (nf_tables)'
legacy\t'iptables-legacy (x_tables)'"
complete -c nfqwall -n "__fish_nfqwall_using_subcommand run" -l socket -d 'Path of the stats socket read by `nfqwall stats`' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand run" -l no-rules -d 'Do not install or remove iptables rules: they are managed elsewhere'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand stats" -l socket -d 'Path of the daemon\'s stats socket' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand stats" -l json -d 'Print the snapshot as JSON instead of a table'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand stats" -s h -l help -d 'Print help'
complete -c nfqwall -n "__fish_nfqwall_using_subcommand report" -s o -l output -d 'The HTML file to write (one self-contained file: inline CSS and SVG)' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand report" -l config -d 'Config file for captures (default: the built-in default config)' -r -F
complete -c nfqwall -n "__fish_nfqwall_using_subcommand report" -l visibility -d 'Which packets of a capture the engine sees: `full` (every frame) or `deployed` (only what the config\'s rendered ruleset would queue)' -r -f -a "full\t'Every frame of the capture'
deployed\t'Only the frames the rendered ruleset would queue to the live daemon'"
complete -c nfqwall -n "__fish_nfqwall_using_subcommand report" -l top -d 'Peers drawn, most trouble first' -r
complete -c nfqwall -n "__fish_nfqwall_using_subcommand report" -s h -l help -d 'Print help (see more with \'--help\')'
