//go:build integration

package integration

// handlerGuestPull is the coco-dev class with rootfs.guest_pull, on the
// coco snapshotter: the guest pulls each container's image itself.
const handlerGuestPull = "coco-guestpull"
