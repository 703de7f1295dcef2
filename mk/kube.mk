# The Kubernetes node of the kubelet tests (integration/kubenode_test.go):
# kube-apiserver, kube-controller-manager, kubelet from k8s.io/kubernetes and
# an embedded etcd, built once per version into $(COCO_CACHE)/kube-*
# (~15 min on 2 cores) before `make integration`, outside the tests' timeout.
# COCO_KUBE=0 skips the build and the tests.
.PHONY: kube-node

kube-node:
	$(GO) run -tags integration ./integration/cmd/kube-node
