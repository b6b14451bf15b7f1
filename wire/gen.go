package wire

// The protobuf code in chatdpb is generated and committed; CI does not need protoc. To regenerate:
//   apt-get install protobuf-compiler
//   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12   # the version in go.mod
//   go generate ./wire/...
//go:generate protoc --proto_path=../proto --go_out=.. --go_opt=module=github.com/chatd-dev/chatd chatd/v1/chatd.proto
