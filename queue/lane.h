/* lane.h: priority lanes: what the configuration needs of them (names,
 * weights, key names) apart from the rest of queue.h. Pure, no Redis.
 *
 * A lane is a stream of jobs of its own (J for the lane `default`, else
 * J:lane:NAME) with its own retry and held sets, in the same consumer group.
 * Claims are shared between the lanes by weight (deficit round-robin over the
 * lanes that have jobs: an empty lane's share goes to the others, and an empty
 * lane is still asked for one job every claim, so a job added to it is claimed
 * by the next claim whatever waits in the others). The lanes' order is their
 * priority (0 highest): a job's lane index is in struct job.lane. */
#ifndef QUEUE_LANE_H
#define QUEUE_LANE_H

#include <stddef.h>

#define QUEUE_LANES_MAX 16
#define QUEUE_LANE_NAME_MAX 32
#define QUEUE_LANE_WEIGHT_MAX 1000
struct queue_lane {
	char name[QUEUE_LANE_NAME_MAX + 1]; /* [A-Za-z0-9_-], "default" = J itself */
	int weight;                         /* 1..QUEUE_LANE_WEIGHT_MAX */
};
/* Parse "NAME[:WEIGHT] ..." (blank or comma separated; weight 1 if not given)
 * into out[0..max). Returns how many, or -1 with a message in err (bad name,
 * bad weight, a name twice, too many). Pure. */
int queue_lanes_parse(const char *spec, struct queue_lane *out, int max, char *err, size_t errlen);
/* The stream key of lane `name` under jobs key `jobs`: jobs itself for
 * "default", else "JOBS:lane:NAME". malloc'd (the caller frees). Pure. */
char *queue_lane_key(const char *jobs, const char *name);

#endif
