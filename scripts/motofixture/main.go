// Command motofixture makes, in a moto_server, the two VPCs of the
// README's network walkthrough — a BYOC VPC (10.0.0.0/16, account
// 111111111111, with the private load balancer's security group) and a
// customer's peer VPC (10.1.0.0/16, account 222222222222) — and prints
// their IDs as shell assignments. It is a demo aid, not part of Tether.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func main() {
	endpoint := flag.String("endpoint", "http://127.0.0.1:5000", "moto_server's URL")
	flag.Parse()
	if err := run(context.Background(), *endpoint); err != nil {
		fmt.Fprintln(os.Stderr, "motofixture:", err)
		os.Exit(1)
	}
}

func client(endpoint, account string) *ec2.Client {
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""), BaseEndpoint: aws.String(endpoint)}
	cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), "arn:aws:iam::"+account+":role/TetherNetwork"))
	return ec2.NewFromConfig(cfg)
}

func run(ctx context.Context, endpoint string) error {
	byoc, peer := client(endpoint, "111111111111"), client(endpoint, "222222222222")
	bv, err := byoc.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		return fmt.Errorf("create the BYOC VPC (is moto_server running at %s?): %w", endpoint, err)
	}
	if _, err := byoc.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("k8s-istioing-istioing-demo"), Description: aws.String("private load balancer"), VpcId: bv.Vpc.VpcId,
	}); err != nil {
		return err
	}
	pv, err := peer.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.1.0.0/16")})
	if err != nil {
		return err
	}
	fmt.Printf("BYOC_VPC=%s\nPEER_VPC=%s\n", aws.ToString(bv.Vpc.VpcId), aws.ToString(pv.Vpc.VpcId))
	return nil
}
