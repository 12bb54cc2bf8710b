"""conflux completion: shell completion for bash, zsh and fish."""


def add_parser(sub):
    p = sub.add_parser("completion", help="print a shell's completion script",
                       description="Print the completion script of SHELL for conflux, made "
                                   "from the same command tree as --help (argcomplete): "
                                   "commands, subcommands, options and their choices. "
                                   "bash: eval \"$(conflux completion bash)\" in ~/.bashrc; "
                                   "zsh: the same in ~/.zshrc; fish: conflux completion fish "
                                   "> ~/.config/fish/completions/conflux.fish.")
    p.add_argument("shell", metavar="SHELL", choices=("bash", "zsh", "fish"),
                   help="bash, zsh or fish")
    p.set_defaults(handler=run)


def run(args):
    import argcomplete

    print(argcomplete.shellcode(["conflux"], shell=args.shell), end="")
    return 0
