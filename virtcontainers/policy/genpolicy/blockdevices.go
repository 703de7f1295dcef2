package genpolicy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// volumeDevice is one entry of a container's volumeDevices: a block
// persistentVolumeClaim given as the device node devicePath.
type volumeDevice struct {
	Name       string `json:"name"`
	DevicePath string `json:"devicePath"`
}

// blockDevices returns the device paths of c's volumeDevices, which the
// policy allows as block entries of linux.devices (and their device cgroup
// rules and PrepareContainer's block_volumes). Each must name a
// persistentVolumeClaim of the pod, at a clean absolute path.
func (g *generator) blockDevices(c *container) ([]string, error) {
	out := []string{}
	if len(c.VolumeDevices) == 0 || string(c.VolumeDevices) == "null" {
		return out, nil
	}
	var vds []volumeDevice
	d := json.NewDecoder(bytes.NewReader(c.VolumeDevices))
	d.DisallowUnknownFields()
	if err := d.Decode(&vds); err != nil {
		return nil, fmt.Errorf("containers[%s].volumeDevices: %w", c.Name, err)
	}
	for i, vd := range vds {
		field := fmt.Sprintf("containers[%s].volumeDevices[%d]", c.Name, i)
		var v *volume
		for j := range g.w.spec.Volumes {
			if g.w.spec.Volumes[j].Name == vd.Name {
				v = &g.w.spec.Volumes[j]
			}
		}
		if v == nil {
			return nil, fmt.Errorf("%s.name: no volume %q in the pod", field, vd.Name)
		}
		if v.PersistentVolumeClaim == nil {
			return nil, fmt.Errorf("%s.name: volume %q is not a persistentVolumeClaim (only a block claim can be a device)", field, vd.Name)
		}
		if !strings.HasPrefix(vd.DevicePath, "/") || path.Clean(vd.DevicePath) != vd.DevicePath || vd.DevicePath == "/" {
			return nil, fmt.Errorf("%s.devicePath: %q must be a clean absolute path", field, vd.DevicePath)
		}
		out = append(out, vd.DevicePath)
	}
	return out, nil
}
