import sys

try:  # a Ctrl-C while the command line is imported: the one line main() prints, no traceback
    from .cli import main
except KeyboardInterrupt:
    print("interrupted (SIGINT)", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
