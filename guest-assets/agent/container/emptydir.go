package container

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mountEmptyDir makes dir, a pod's emptyDir, its own tmpfs the first time
// a container mounts it, so one emptyDir filling up gives its writers
// ENOSPC instead of taking the space of the others and of the agent.
// size (bytes) comes from the pod's emptydir.coco-runtime.io/<name>
// annotation; 0 leaves the kernel's default (half the guest's memory).
// Later containers of the pod share the mount; its first size stays.
func (m *Manager) mountEmptyDir(dir string, size int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.emptyDirs[dir] {
		return nil
	}
	opts := "mode=0777"
	if size > 0 {
		opts += fmt.Sprintf(",size=%d", size)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NODEV|unix.MS_NOSUID, opts); err != nil {
		return fmt.Errorf("emptyDir tmpfs on %s (%s): %w", dir, opts, err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	if m.emptyDirs == nil {
		m.emptyDirs = map[string]bool{}
	}
	m.emptyDirs[dir] = true
	return nil
}
