package trainer

import "context"

// MNISTOneEpoch trains the reference model of issue A, an MLP
// 784-128-128-10 with ReLU, for one epoch of the training set with SGD
// (η = 0.05, momentum 0.9, batch 32) and returns its test accuracy. It is
// shared by the example and the test so both check the same thing.
func MNISTOneEpoch(ctx context.Context, train, test *Dataset, seed uint64) (float64, error) {
	net, err := NewMLP(MLPConfig{Sizes: []int{784, 128, 128, 10}, Activation: ReLU}, seed)
	if err != nil {
		return 0, err
	}
	const batch = 32
	_, err = Train(ctx, Config{
		Model: net, Loss: CrossEntropy{}, Optimizer: &SGD{LR: 0.05, Momentum: 0.9},
		Data: train.Flat(), BatchSize: batch, Steps: int64(train.Len() / batch), Seed: seed,
	})
	if err != nil {
		return 0, err
	}
	return Accuracy(net, test)
}
