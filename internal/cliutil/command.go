package cliutil

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Command runs a subcommand with the arguments after its name. It returns flag.ErrHelp when it
// only showed its help (-h), which is a success.
type Command func(args []string, stdout, stderr io.Writer) error

// Program is a command line program with subcommands: "NAME COMMAND [args]".
type Program struct {
	// Name starts the version line ("NAME VERSION") and error messages ("NAME: error").
	Name    string
	Version string
	// Usage is the overall help: printed to stdout by "help", to stderr for a missing or unknown
	// command.
	Usage string
	// Commands are the subcommands by name.
	Commands map[string]Command
}

// Run runs the command line args (without the program name) and returns the exit status: 0 for
// success and for help, 1 when the command failed (the error is printed to stderr), 2 for a
// missing or unknown command. Besides Commands it knows:
//
//	version, --version    print "NAME VERSION"
//	help, -h, --help      print Usage
//	help COMMAND          run "COMMAND -h"
func (p Program) Run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, p.Usage)
		return 2
	}
	var err error
	switch name := args[0]; {
	case p.Commands[name] != nil:
		err = p.Commands[name](args[1:], stdout, stderr)
	case name == "version" || name == "--version":
		fmt.Fprintln(stdout, p.Name, p.Version)
	case isHelp(name):
		if len(args) > 1 && !isHelp(args[1]) {
			return p.Run([]string{args[1], "-h"}, stdout, stderr)
		}
		fmt.Fprint(stdout, p.Usage)
	default:
		fmt.Fprintf(stderr, "%s: unknown command %q\n\n%s", p.Name, name, p.Usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var st ExitStatus
	if errors.As(err, &st) {
		return int(st)
	}
	if err != nil {
		// Library errors often name the program already ("bizapi: no data folder…"): say it once.
		msg := err.Error()
		if !strings.HasPrefix(msg, p.Name+": ") {
			msg = p.Name + ": " + msg
		}
		fmt.Fprintln(stderr, msg)
		return 1
	}
	return 0
}

// ExitStatus, returned by a Command, ends the program with that status and no further message (the
// command said what it had to).
type ExitStatus int

func (e ExitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func isHelp(arg string) bool { return arg == "help" || arg == "-h" || arg == "--help" }
