//! Turns an ECS task definition into a protected one (filled by the next commit).
