// Package image pulls container images inside the guest, for issue 24: the
// host only ever moves ciphertext and cannot substitute the workload.
//
// The agent calls, per pod:
//
//	store, _ := image.NewStore("/run/coco/images", limit) // on the scratch disk
//	img, err := store.Pull(ctx, ref, image.PullOptions{Registry: ..., Policy: ..., Keys: attest.Resource})
//	err = store.Mount(img, containerID, rootfs) // overlay: the image's layers + a private upper
//	...
//	store.Unmount(containerID, rootfs)
//
// Pull resolves the reference (a tag is resolved to a digest, reported in
// Image.Digest), checks the policy (cosign signatures, see Policy), verifies
// every digest, decrypts CoCo-encrypted layers with keys from the KBS, and
// unpacks the layers the store lacks into content-addressed directories (see
// Store for the layout and why). The user-facing side — Encrypter and Sign —
// makes such images with the same code.
package image
