//go:build integration

// Command euid prints its effective uid. The harness installs it set-uid
// root in critest's nonewprivs image, whose specs check that
// no_new_privs keeps a set-uid program at the caller's uid.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
