package cloudsim

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Credentials are static credentials for SDK clients of the simulator,
// which accepts any SigV4 signature but refuses unsigned requests. Use them
// only against the simulator, e.g. with config.WithCredentialsProvider in
// the LoadOptions of infrastructure/aws; real AWS goes through the
// standard credential chain.
func Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider("AKIASIMULATOR", "simulator-secret", "")
}
