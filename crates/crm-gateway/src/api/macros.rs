//! Generates the standard methods (Create, Get, List, Update, Delete) of a service impl.

/// `service_impl!(Trait for Svc, [Resource => Wire { ... }, ...], extra methods...)`.
#[macro_export]
macro_rules! service_impl {
    ($Trait:path, $Svc:ty, [$( $R:ty => $W:ty {
        $create:ident($CReq:ty, $field:ident),
        $get:ident($GReq:ty),
        $list:ident($LReq:ty => $LResp:ident . $items:ident),
        $update:ident($UReq:ty),
        $delete:ident($DReq:ty)
    } ),* $(,)?] $($extra:tt)*) => {
        #[tonic::async_trait]
        impl $Trait for $Svc {
            $(
            async fn $create(&self, r: tonic::Request<$CReq>) -> Result<tonic::Response<$W>, tonic::Status> {
                let ctx = self.0.ctx(&r).await?;
                let r = r.into_inner();
                Ok(tonic::Response::new($crate::api::create::<$R, $W>(&ctx, r.$field, &r.request_id).await?))
            }

            async fn $get(&self, r: tonic::Request<$GReq>) -> Result<tonic::Response<$W>, tonic::Status> {
                let ctx = self.0.ctx(&r).await?;
                Ok(tonic::Response::new($crate::api::get::<$R, $W>(&ctx, &r.get_ref().name).await?))
            }

            async fn $list(&self, r: tonic::Request<$LReq>) -> Result<tonic::Response<$LResp>, tonic::Status> {
                let ctx = self.0.ctx(&r).await?;
                let r = r.into_inner();
                let p = $crate::api::params(r.page_size, r.page_token, r.filter, r.order_by);
                let (items, next_page_token) = $crate::api::list::<$R, $W>(&ctx, p).await?;
                Ok(tonic::Response::new($LResp { $items: items, next_page_token }))
            }

            async fn $update(&self, r: tonic::Request<$UReq>) -> Result<tonic::Response<$W>, tonic::Status> {
                let ctx = self.0.ctx(&r).await?;
                let r = r.into_inner();
                Ok(tonic::Response::new($crate::api::update::<$R, $W>(&ctx, r.$field, r.update_mask).await?))
            }

            async fn $delete(&self, r: tonic::Request<$DReq>) -> Result<tonic::Response<()>, tonic::Status> {
                let ctx = self.0.ctx(&r).await?;
                $crate::api::delete::<$R, $W>(&ctx, &r.get_ref().name, &r.get_ref().etag).await?;
                Ok(tonic::Response::new(()))
            }
            )*
            $($extra)*
        }
    };
}
