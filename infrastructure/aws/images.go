package aws

import (
	"container/list"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// DescribeImage returns an AMI's name, description and creation date. Found
// images are cached (Options.ImageCacheTTL, Options.ImageCacheSize); a
// missing AMI is a CloudNotFound error and is not cached.
func (p *Provider) DescribeImage(ctx context.Context, region, imageID string) (application.Image, error) {
	c, err := p.region(opDescribeImages, region)
	if err != nil {
		return application.Image{}, err
	}
	key := region + "/" + imageID
	now := p.clock.Now()
	if img, ok := p.images.get(key, now); ok {
		return img, nil
	}
	out, err := c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
	if err != nil {
		err = classify(opDescribeImages, err)
		if ce := application.CloudErrorOf(err); strings.HasPrefix(ce.Code, "InvalidAMIID.NotFound") {
			ce.Kind = application.CloudNotFound
		}
		return application.Image{}, err
	}
	for _, img := range out.Images {
		if awssdk.ToString(img.ImageId) != imageID {
			continue
		}
		res := application.Image{
			ImageID:     imageID,
			Name:        awssdk.ToString(img.Name),
			Description: awssdk.ToString(img.Description),
		}
		if d := awssdk.ToString(img.CreationDate); d != "" {
			if t, err := time.Parse(time.RFC3339, d); err == nil {
				res.CreationDate = t
			}
		}
		p.images.put(key, res, now)
		return res, nil
	}
	return application.Image{}, &application.CloudError{Kind: application.CloudNotFound, Op: opDescribeImages,
		Code: "InvalidAMIID.NotFound", Message: fmt.Sprintf("image %s does not exist in %s", imageID, region)}
}

// imageCache is a bounded LRU cache of AMIs with a time to live.
type imageCache struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	order *list.List // front = most recently used
	items map[string]*list.Element
}

type imageEntry struct {
	key     string
	img     application.Image
	expires time.Time
}

func newImageCache(size int, ttl time.Duration) *imageCache {
	return &imageCache{max: size, ttl: ttl, order: list.New(), items: map[string]*list.Element{}}
}

func (c *imageCache) get(key string, now time.Time) (application.Image, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return application.Image{}, false
	}
	e := el.Value.(*imageEntry)
	if !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, key)
		return application.Image{}, false
	}
	c.order.MoveToFront(el)
	return e.img, true
}

func (c *imageCache) put(key string, img application.Image, now time.Time) {
	if c.max == 0 || c.ttl == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value = &imageEntry{key: key, img: img, expires: now.Add(c.ttl)}
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&imageEntry{key: key, img: img, expires: now.Add(c.ttl)})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*imageEntry).key)
	}
}

func (c *imageCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
